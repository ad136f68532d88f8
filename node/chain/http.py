"""The HTTP/1.1 side of ``mu chain``'s JSON-RPC server (``specs/chain.md`` §4.1 HTTP).

A deliberately small server: POST with a Content-Length body, HTTP Basic
authentication, keep-alive, and hard bounds on everything a client sends.
Like bitcoind it answers 401 to bad credentials, 405 to other methods and
413 to oversized bodies, then keeps serving other connections.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger(__name__)

#: Request line plus headers, bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Request body, bytes (a 400 kWU transaction in hex is under 1 MiB).
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Concurrent client connections; more wait in the kernel's accept queue.
MAX_CONNECTIONS = 64
#: Seconds a connection may stay idle or take to send one request.
IDLE_TIMEOUT = 60.0

Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]

_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
}


class _Reject(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def response(status: int, body: bytes = b"", *, close: bool = False, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n{extra}\r\n"
    )
    return head.encode() + body


class BasicAuth:
    """Accepts any of the given ``user:password`` pairs, compared in constant time."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._tokens = [
            b"Basic " + base64.b64encode(f"{user}:{password}".encode()) for user, password in pairs
        ]

    def check(self, header: bytes | None) -> bool:
        if header is None:
            return False
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(header.strip(), token)
        return ok


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    async def read_head(self) -> tuple[str, str, dict[bytes, bytes]] | None:
        """Read one request head; None on a clean close between requests."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise _Reject(431)
            if not await self._fill():
                if self.buffer:
                    raise _Reject(400)
                return None
        if end > MAX_HEADER_BYTES:
            raise _Reject(431)
        head = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        request_line, *lines = head.split(b"\r\n")
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _Reject(400)
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _Reject(400)
            headers[name.strip().lower()] = value.strip()
        return parts[0].decode("latin-1"), parts[2].decode("latin-1"), headers

    async def read_body(self, length: int) -> bytes:
        while len(self.buffer) < length:
            if not await self._fill():
                raise _Reject(400)
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body


async def _serve_connection(stream: trio.SocketStream, auth: BasicAuth, handler: Handler) -> None:
    conn = _Connection(stream)
    try:
        while True:
            try:
                with trio.fail_after(IDLE_TIMEOUT):
                    head = await conn.read_head()
                    if head is None:
                        return
                    method, version, headers = head
                    keep_alive = version == "HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
                    if not auth.check(headers.get(b"authorization")):
                        # bitcoind: 401 with a Basic challenge; the body stays unread.
                        await stream.send_all(response(
                            401, close=True, extra='WWW-Authenticate: Basic realm="jsonrpc"\r\n'))
                        return
                    if method != "POST":
                        raise _Reject(405)
                    if b"transfer-encoding" in headers or b"content-length" not in headers:
                        raise _Reject(411)
                    try:
                        length = int(headers[b"content-length"])
                    except ValueError:
                        raise _Reject(400) from None
                    if length < 0:
                        raise _Reject(400)
                    if length > MAX_BODY_BYTES:
                        raise _Reject(413)
                    body = await conn.read_body(length)
            except trio.TooSlowError:
                return
            try:
                status, reply = await handler(body)
            except Exception:  # a handler bug answers 500; it never ends the service
                log.exception("RPC handler failed")
                status, reply, keep_alive = 500, b"", False
            await stream.send_all(response(status, reply, close=not keep_alive))
            if not keep_alive:
                return
    except _Reject as reject:
        # Framing is lost after a bad request: answer and close, like bitcoind.
        with trio.move_on_after(1):
            await stream.send_all(response(reject.status, close=True))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away; nothing to answer
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def serve_http(
    handler: Handler,
    auth: BasicAuth,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve JSON-RPC over HTTP on ``host:port``; reports the bound port when ready."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    limit = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def one(stream: trio.SocketStream) -> None:
        async with limit:
            await _serve_connection(stream, auth, handler)

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        nursery.start_soon(trio.serve_listeners, one, listeners)
