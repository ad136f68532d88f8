"""One HTTP server for every HTTP face of mu: hypercorn's trio worker under a connection cap.

The control API (specs/network.md §6 Control API) and ``mu chain``'s
JSON-RPC server (specs/chain.md §4.1 HTTP) are ASGI applications served
here.  Hypercorn parses and formats HTTP (h11); this module only adds
what hypercorn's own ``serve`` lacks for a node:

* the caller binds the socket (port 0: the OS chooses) and learns the
  port before anything is served;
* at most ``HttpLimits.max_connections`` connections are served at once;
  further ones wait in the kernel's accept queue, unread, so one flood
  cannot exhaust the node's file descriptors;
* the time a client may take to send its request headers
  (``header_timeout``: hypercorn's ``keep_alive_timeout`` runs from the
  connection's start until a request's headers are complete, and between
  kept-alive requests), the size of those headers
  (``h11_max_incomplete_size``) and the idle time of a kept-alive
  connection are bounded.

Hypercorn's ``worker_serve`` has no connection cap, so the accept loop is
ours and each connection runs hypercorn's trio ``TCPServer``; the version
is pinned in pyproject.toml because that class is hypercorn's internal API.
"""

from __future__ import annotations

import errno
import logging
import socket
from dataclasses import dataclass
from typing import cast

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ASGIFramework
from starlette.types import ASGIApp
from hypercorn.utils import wrap_app

log = logging.getLogger(__name__)

# accept() failures that mean "out of descriptors or memory for now": back
# off and retry, as trio.serve_listeners does, instead of ending the server.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1
#: Seconds the replies in flight get to go out once a server is asked to stop.
GRACEFUL_TIMEOUT = 3.0
#: Pending connections the kernel queues while every slot is taken.
LISTEN_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds one server puts on its clients.

    Args:
        max_connections: connections served at once; more wait unaccepted.
        max_header_bytes: request line plus headers; more is refused (h11).
        header_timeout: seconds from the connection's start (or the end of
            the previous reply) to the end of a request's headers; a client
            that is slower is disconnected without a reply.
    """

    max_connections: int
    max_header_bytes: int
    header_timeout: float


def _config(limits: HttpLimits) -> Config:
    config = Config()
    config.keep_alive_timeout = limits.header_timeout
    config.h11_max_incomplete_size = limits.max_header_bytes
    # No read_timeout: a client waiting for a long streamed reply sends
    # nothing for minutes and must not be cut off.
    config.read_timeout = None
    config.include_server_header = False
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    return config


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: the OS chooses the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_asgi(
    app: ASGIApp,
    sock: socket.socket,
    limits: HttpLimits,
    *,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the listening ``sock`` until cancelled or ``stop`` is set; the socket is closed on exit.

    Once ``stop`` is set, no connection is accepted any more, idle ones are
    closed, and the replies in flight (the reply to a ``stop`` call among
    them) get ``GRACEFUL_TIMEOUT`` seconds to go out; then this returns.  A
    failing connection (reset, a protocol error) ends that connection only;
    hypercorn answers HTTP-level errors (400, 431) itself.
    """
    config = _config(limits)
    # Starlette's ASGI types are plain mappings, hypercorn's are TypedDicts: the same messages.
    wrapped = wrap_app(cast(ASGIFramework, app), config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    slots = trio.Semaphore(limits.max_connections)

    async def one(stream: trio.SocketStream) -> None:
        try:
            await TCPServer(wrapped, config, context, {}, stream)  # type: ignore[arg-type]
        finally:
            slots.release()

    async def accept(connections: trio.Nursery) -> None:
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                slots.release()
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.warning("accept failed (%s); retrying in %s s", exc, ACCEPT_BACKOFF)
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            connections.start_soon(one, stream)

    async with listener, trio.open_nursery() as connections:
        async with trio.open_nursery() as acceptor:
            acceptor.start_soon(accept, connections)
            task_status.started()
            if stop is None:
                await trio.sleep_forever()
            else:
                await stop.wait()
            acceptor.cancel_scope.cancel()
        # Hypercorn closes idle connections once the context is terminated,
        # and each busy one as soon as its reply is complete.
        await context.terminated.set()
        connections.cancel_scope.deadline = trio.current_time() + GRACEFUL_TIMEOUT
