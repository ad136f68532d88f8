"""The HTTP side of ``mu chain``'s JSON-RPC server (``specs/chain.md`` §4.1 HTTP).

A starlette app on the node's one HTTP server (node/runtime/http.py:
hypercorn's trio worker, keep-alive, bounded headers, a connection cap).
Like bitcoind it answers 401 to bad credentials, 405 to other methods, 411
to a body without a length and 413 to oversized bodies, then keeps serving
other connections.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from node.runtime.http import HttpLimits, bind_tcp, serve_asgi

log = logging.getLogger(__name__)

#: Request line plus headers, bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Request body, bytes (a 400 kWU transaction in hex is under 1 MiB).
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Concurrent client connections; more wait in the kernel's accept queue.
MAX_CONNECTIONS = 64
#: Seconds a connection may stay idle or take to send one request's headers (and, separately, its body).
IDLE_TIMEOUT = 60.0
LIMITS = HttpLimits(max_connections=MAX_CONNECTIONS, max_header_bytes=MAX_HEADER_BYTES, header_timeout=IDLE_TIMEOUT)

Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]


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


def _reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _read_body(request: Request) -> bytes | Response:
    """The body, or the refusal: 411 without a length, 413 over ``MAX_BODY_BYTES``, 408 too slow."""
    declared = request.headers.get("content-length")
    if declared is None:
        return _reply(411)
    if not declared.isdigit():
        return _reply(400)
    if int(declared) > MAX_BODY_BYTES:
        return _reply(413)
    body = bytearray()
    with trio.move_on_after(IDLE_TIMEOUT) as scope:
        async for chunk in request.stream():
            body += chunk
    if scope.cancelled_caught:
        return _reply(408)
    return bytes(body)


def rpc_app(handler: Handler, auth: BasicAuth) -> Starlette:
    """The JSON-RPC endpoint: POST to any path, as bitcoind (its wallet paths too)."""

    async def endpoint(request: Request) -> Response:
        if not auth.check(request.headers.get("authorization", "").encode("latin-1") or None):
            # bitcoind: 401 with a Basic challenge; the body stays unread.
            return _reply(401, headers={"WWW-Authenticate": 'Basic realm="jsonrpc"', "Connection": "close"})
        if request.method != "POST":
            return _reply(405)
        body = await _read_body(request)
        if isinstance(body, Response):
            return body
        try:
            status, reply = await handler(body)
        except Exception:  # a handler bug answers 500; it never ends the service
            log.exception("RPC handler failed")
            return _reply(500)
        return _reply(status, reply)

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


async def serve_http(
    handler: Handler,
    auth: BasicAuth,
    port: int,
    *,
    host: str = "127.0.0.1",
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve JSON-RPC over HTTP on ``host:port``; reports the bound port when ready.

    Returns once ``stop`` is set and the replies in flight (the ``stop``
    call's own reply among them) are sent.
    """
    sock = bind_tcp(host, port)
    bound = sock.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_asgi, rpc_app(handler, auth), sock, LIMITS, stop=stop))
        task_status.started(bound)
