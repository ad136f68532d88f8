"""The node's local control API: HTTP/1.1 + JSON on 127.0.0.1 (specs/network.md §6).

The running node (`mu node`) serves it; the CLI (`mu status`, `mu add`,
`mu get`, ...) is its client.  One request per connection, ``Connection:
close``.  Every request carries ``Authorization: Bearer <token>`` where the
token is the content of ``control.token`` in the data dir (64 hex digits,
file mode 0600, new at each start); the port is in ``control.port``.

Replies are one JSON object, or for long operations newline-delimited JSON
events (``application/x-ndjson``) ending with one ``{"event": "done",
"result": ...}`` or ``{"event": "error", "error": ...}`` line.  Errors are
``{"error": {"code": ..., "message": ...}}`` with an HTTP status.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.runtime.config import write_secret_file

log = logging.getLogger(__name__)

TOKEN_FILE = "control.token"
PORT_FILE = "control.port"
TOKEN_BYTES = 32
MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
MAX_CONTROL_CONNECTIONS = 32
HEADER_TIMEOUT = 10.0
# After an error reply, unread request bytes are drained (bounded) so that
# closing does not reset the connection before the client reads the reply.
MAX_DRAIN_BYTES = 1024 * 1024
DRAIN_TIMEOUT = 2.0
CLIENT_TIMEOUT = 30.0
API_PREFIX = "/v1/"

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large", 422: "Unprocessable Content",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}

Json = dict[str, Any]
Emit = Callable[[Json], Awaitable[None]]
Handler = Callable[[Json], Awaitable[Json]]
StreamHandler = Callable[[Json, Emit], Awaitable[Json]]


class ControlError(Exception):
    """An error reply: HTTP status, a stable code string and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NodeNotRunning(ControlError):
    """No node answers on the data dir's control port."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "not-running", message)


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Handler | None
    stream: StreamHandler | None


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nConnection: close\r\n")
    if content_type == "application/json":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def _read_request(stream: trio.SocketStream) -> tuple[str, str, dict[str, str], bytes]:
    """Read one bounded request: (method, path, lower-cased headers, body)."""
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEADER_BYTES:
            raise ControlError(431, "header-too-large", f"headers exceed {MAX_HEADER_BYTES} bytes")
        data = await stream.receive_some(MAX_HEADER_BYTES)
        if not data:
            raise ControlError(400, "malformed", "connection closed before the end of the headers")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    if len(head) > MAX_HEADER_BYTES:
        raise ControlError(431, "header-too-large", f"headers exceed {MAX_HEADER_BYTES} bytes")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ControlError(400, "malformed", "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ControlError(400, "malformed", "bad header line")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise ControlError(400, "malformed", "chunked request bodies are not accepted")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise ControlError(400, "malformed", "bad Content-Length") from None
    if length < 0:
        raise ControlError(400, "malformed", "bad Content-Length")
    if length > MAX_BODY_BYTES:
        raise ControlError(413, "body-too-large", f"body exceeds {MAX_BODY_BYTES} bytes")
    body = bytearray(rest)
    while len(body) < length:
        data = await stream.receive_some(length - len(body))
        if not data:
            raise ControlError(400, "malformed", "connection closed inside the body")
        body += data
    if len(body) > length:
        raise ControlError(400, "malformed", "bytes after the body")
    return parts[0], parts[1], headers, bytes(body)


class ControlServer:
    """The control API of one node.

    Args:
        data_dir: where the token and port files are written.
        node_id: the node's ID, reported by ``GET /v1/status``.
    """

    def __init__(self, data_dir: Path, node_id: bytes) -> None:
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self._routes: dict[tuple[str, str], _Route] = {}
        self._status: dict[str, Callable[[], Json]] = {}
        self._token = b""
        self._started = time.monotonic()
        self._slots = trio.Semaphore(MAX_CONTROL_CONNECTIONS)
        self.port = 0
        self.route("GET", "status", self._handle_status)

    def route(self, method: str, name: str, handler: Handler) -> None:
        """Serve ``METHOD /v1/<name>`` with ``handler(body) -> reply``."""
        self._routes[(method, API_PREFIX + name)] = _Route(handler, None)

    def stream_route(self, name: str, handler: StreamHandler) -> None:
        """Serve ``POST /v1/<name>`` as an event stream: ``handler(body, emit) -> result``."""
        self._routes[("POST", API_PREFIX + name)] = _Route(None, handler)

    def add_status(self, section: str, report: Callable[[], Json]) -> None:
        """Add a section to ``GET /v1/status``, filled by ``report()`` at each call."""
        self._status[section] = report

    async def _handle_status(self, body: Json) -> Json:
        reply: Json = {"node_id": self.node_id.hex(), "uptime_s": round(time.monotonic() - self._started, 3)}
        for section, report in self._status.items():
            reply[section] = report()
        return reply

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (OS-chosen port), write the token and port files, serve forever.

        ``task_status.started`` gets the port.  The port file is removed on
        exit if it still names our port: a file another server wrote since is
        not ours to delete (``mu node`` also holds the data dir's lock, so
        under it no other server writes one).
        """
        token = secrets.token_hex(TOKEN_BYTES).encode()
        write_secret_file(self.data_dir / TOKEN_FILE, token)
        self._token = token
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        port_path = self.data_dir / PORT_FILE
        tmp = port_path.with_name(PORT_FILE + ".tmp")
        tmp.write_text(f"{self.port}\n")
        os.replace(tmp, port_path)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self.port)
                await trio.serve_listeners(self._handle_connection, listeners, handler_nursery=nursery)
        finally:
            try:
                ours = port_path.read_text() == f"{self.port}\n"
            except OSError:
                ours = False  # already gone
            if ours:
                port_path.unlink()

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        if self._slots.value == 0:
            await self._send_quietly(stream, _response(503, _error_body("busy", "too many control connections")))
            await stream.aclose()
            return
        async with self._slots:
            try:
                await self._serve_one(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; nothing to answer
            finally:
                await stream.aclose()

    async def _send_quietly(self, stream: trio.SocketStream, data: bytes) -> None:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        try:
            with trio.fail_after(HEADER_TIMEOUT):
                method, path, headers, raw = await _read_request(stream)
            self._check_token(headers)
            route = self._routes.get((method, path))
            if route is None:
                if any(p == path for _, p in self._routes):
                    raise ControlError(405, "method-not-allowed", f"{method} not allowed on {path}")
                raise ControlError(404, "not-found", f"no such endpoint {path}")
            body = self._parse_body(raw)
        except trio.TooSlowError:
            log.info("control: request headers not received within %ss", HEADER_TIMEOUT)
            return
        except ControlError as exc:
            await self._send_quietly(stream, _response(exc.status, _error_body(exc.code, exc.message)))
            await self._drain(stream)
            return
        if route.handler is not None:
            await self._answer(stream, route.handler, body)
        else:
            assert route.stream is not None
            await self._answer_stream(stream, route.stream, body)

    @staticmethod
    async def _drain(stream: trio.SocketStream) -> None:
        drained = 0
        with trio.move_on_after(DRAIN_TIMEOUT):
            try:
                await stream.send_eof()
                while drained < MAX_DRAIN_BYTES:
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    drained += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _check_token(self, headers: dict[str, str]) -> None:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            raise ControlError(401, "unauthorized", f"missing or wrong bearer token (see {TOKEN_FILE})")

    @staticmethod
    def _parse_body(raw: bytes) -> Json:
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ControlError(400, "bad-json", f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ControlError(400, "bad-json", "body must be a JSON object")
        return body

    async def _answer(self, stream: trio.SocketStream, handler: Handler, body: Json) -> None:
        try:
            reply = await handler(body)
            data = _response(200, json.dumps(reply).encode())
        except ControlError as exc:
            data = _response(exc.status, _error_body(exc.code, exc.message))
        except Exception as exc:  # a handler bug must not take the node down
            log.exception("control: handler failed")
            data = _response(500, _error_body("internal", f"{type(exc).__name__}: {exc}"))
        await stream.send_all(data)

    async def _answer_stream(self, stream: trio.SocketStream, handler: StreamHandler, body: Json) -> None:
        await stream.send_all(_response(200, b"", "application/x-ndjson"))

        lock = trio.Lock()  # handlers may emit from several tasks at once

        async def emit(event: Json) -> None:
            line = json.dumps(event).encode() + b"\n"
            async with lock:
                await stream.send_all(line)

        try:
            result = await handler(body, emit)
            last: Json = {"event": "done", "result": result}
        except ControlError as exc:
            last = {"event": "error", "error": {"code": exc.code, "message": exc.message}}
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the client left: the operation stops with it
        except Exception as exc:
            log.exception("control: stream handler failed")
            last = {"event": "error", "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}
        await emit(last)


class ControlClient:
    """Talks to the node whose data dir holds the token and port files."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> ControlClient:
        """Read the port and token files; NodeNotRunning if either is missing or unreadable."""
        try:
            port = int((Path(data_dir) / PORT_FILE).read_text().strip())
            token = (Path(data_dir) / TOKEN_FILE).read_text().strip()
        except (OSError, ValueError):
            raise NodeNotRunning(f"no node is running with data dir {data_dir} (start one with `mu node`)") from None
        return cls(port, token)

    async def _open(self, method: str, path: str, body: Json | None) -> tuple[trio.SocketStream, int, dict[str, str], bytes]:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError:
            raise NodeNotRunning(f"no node answers on 127.0.0.1:{self.port}") from None
        payload = json.dumps(body).encode() if body is not None else b""
        head = (f"{method} {API_PREFIX}{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
        await stream.send_all(head.encode() + payload)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(MAX_HEADER_BYTES)
            if not data or len(buf) > MAX_HEADER_BYTES:
                await stream.aclose()
                raise ControlError(502, "bad-reply", "the node closed the connection or sent oversize headers")
            buf += data
        head_bytes, _, rest = bytes(buf).partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            await stream.aclose()
            raise ControlError(502, "bad-reply", "malformed status line") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return stream, status, headers, rest

    async def call(self, method: str, path: str, body: Json | None = None) -> Json:
        """Send one request and return the JSON reply; ControlError for an error reply."""
        with trio.fail_after(CLIENT_TIMEOUT):
            stream, status, _, data = await self._open(method, path, body)
            buf = bytearray(data)
            async with stream:
                while True:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    buf += chunk
                    if len(buf) > MAX_RESPONSE_BYTES:
                        raise ControlError(502, "bad-reply", f"reply exceeds {MAX_RESPONSE_BYTES} bytes")
        return _decode_reply(status, bytes(buf))

    @asynccontextmanager
    async def open_stream(self, path: str, body: Json) -> AsyncIterator[AsyncIterator[Json]]:
        """``POST /v1/<path>`` and yield an iterator over its events (the last is done or error)."""
        with trio.fail_after(CLIENT_TIMEOUT):
            stream, status, _, data = await self._open("POST", path, body)
        async with stream:
            if status != 200:
                rest = bytearray(data)
                with trio.fail_after(CLIENT_TIMEOUT):
                    while chunk := await stream.receive_some(65536):
                        rest += chunk
                        if len(rest) > MAX_RESPONSE_BYTES:
                            break
                _decode_reply(status, bytes(rest))
            yield _events(stream, bytearray(data))

    async def run_stream(self, path: str, body: Json, on_event: Callable[[Json], None]) -> Json:
        """Run a streaming operation: ``on_event`` sees each progress event; returns the result.

        Raises:
            ControlError: the operation ended with an error event, or the stream broke off.
        """
        async with self.open_stream(path, body) as events:
            async for event in events:
                kind = event.get("event")
                if kind == "done":
                    result = event.get("result")
                    return result if isinstance(result, dict) else {}
                if kind == "error":
                    err = event.get("error") or {}
                    raise ControlError(500, str(err.get("code", "error")), str(err.get("message", "")))
                on_event(event)
        raise ControlError(502, "bad-reply", "the stream ended without a result")


async def _events(stream: trio.SocketStream, buf: bytearray) -> AsyncIterator[Json]:
    while True:
        line, sep, rest = bytes(buf).partition(b"\n")
        if sep:
            buf[:] = rest
            yield json.loads(line)
            continue
        if len(buf) > MAX_EVENT_BYTES:
            raise ControlError(502, "bad-reply", f"event exceeds {MAX_EVENT_BYTES} bytes")
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buf:
                raise ControlError(502, "bad-reply", "stream ended inside an event")
            return
        buf += chunk


def _decode_reply(status: int, data: bytes) -> Json:
    try:
        reply = json.loads(data) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(502, "bad-reply", f"reply with status {status} is not JSON") from None
    if status != 200:
        err = reply.get("error", {}) if isinstance(reply, dict) else {}
        raise ControlError(status, str(err.get("code", "error")), str(err.get("message", f"HTTP {status}")))
    if not isinstance(reply, dict):
        raise ControlError(502, "bad-reply", "reply is not a JSON object")
    return reply
