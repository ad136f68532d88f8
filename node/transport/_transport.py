"""The trio TCP listener and dialer: sessions per peer, limits, timeouts.

Inbound connections are bounded twice (specs/wire.md §8 Limits and
defaults): before authentication by one global budget of pending handshakes,
each with a short deadline, where a newcomer past the budget evicts the
oldest pending handshake of the address holding the most (so a flood pushes
out its own connections, and an honest peer behind the same address still
gets in); after authentication by a number of sessions per node id, where a
newer session replaces the oldest.  No bound counts addresses: one address
may hold many honest nodes.

``open_transport`` starts a listener inside its own nursery and yields a
``Transport``.  Leaving the ``async with`` block cancels that nursery: every
session task closes its socket on the way out, so shutdown is clean and
nothing outlives the block.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import count
from typing import Any

import trio

from protocol.identity import Identity
from protocol.wire import (
    NEED_DATA,
    WIRE_VERSION,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Hello,
    ProtocolError,
    Role,
    SessionEstablished,
)
from node.runtime.tasks import helper_nursery
from node.transport._errors import SessionBroken, TransportError
from node.transport._limits import Limits
from node.transport._session import RequestHandler, Session

log = logging.getLogger("mu.transport")

# Handshake messages are under 200 bytes and HELLO under 64 KiB (specs/wire.md §3.3 Messages, §8 Limits and defaults).
HANDSHAKE_READ_SIZE = 64 * 1024

# glibc's mallopt parameters (malloc.h) and the values tune_allocator sets.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap rather than a fresh mmap each:
#: above the largest record (MAX_RECORD_SIZE, 4 MiB of data plus meta).
ALLOCATOR_MMAP_THRESHOLD = 8 * 1024 * 1024
#: Free bytes a heap keeps at its top instead of handing them back to the
#: kernel: room for a few 4 MiB chunks in flight, a bound on what stays mapped.
ALLOCATOR_TRIM_THRESHOLD = 16 * 1024 * 1024


@functools.cache
def tune_allocator() -> bool:
    """Let the C allocator reuse chunk-sized blocks instead of mapping them afresh; True if it could.

    Every chunk a session receives becomes a new ``bytes`` object of up to
    4 MiB, and so does every chunk a node reads from its store.  glibc's
    default hands such a block back to the kernel soon after it is freed
    (munmap, or a heap trimmed past a threshold that follows the biggest
    block freed so far), so the next chunk's block is fresh memory: the
    kernel faults in and zeroes 256 pages per MiB before the data is
    written once, which cost a receiving session about as much CPU as
    decrypting the chunk (scripts/bench-transport's in-process Session pair:
    90-100 minor page faults per 1 MiB chunk, 2 after).
    Fixed thresholds keep the freed blocks in the heap for the next chunk,
    up to ALLOCATOR_TRIM_THRESHOLD of free memory per heap.  Process-wide,
    once per process; elsewhere than glibc it does nothing.
    """
    try:
        glibc = sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
        mallopt = ctypes.CDLL(None).mallopt if glibc else None
    except (OSError, ValueError, AttributeError):  # no such confstr name, or no mallopt
        return False
    if mallopt is None:
        return False
    # The mmap threshold first: setting either fixes both (no more sliding thresholds).
    return bool(mallopt(_M_MMAP_THRESHOLD, ALLOCATOR_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, ALLOCATOR_TRIM_THRESHOLD)
    )


async def _establish(stream: trio.SocketStream, conn: Connection, receive_size: int) -> None:
    """Drive the handshake and HELLO exchange to SessionEstablished."""
    while True:
        event = conn.next_event()
        # Handshake replies and our HELLO are queued by next_event: flush first.
        out = conn.data_to_send()
        if out:
            await stream.send_all(out)
        if event is NEED_DATA:
            conn.receive_data(await stream.receive_some(receive_size))
            continue
        if isinstance(event, SessionEstablished):
            return
        if isinstance(event, ConnectionClosed):
            raise SessionBroken("peer closed the connection during the handshake", ErrorCode.HANDSHAKE_FAILED)
        raise SessionBroken(f"unexpected {type(event).__name__} during the handshake", ErrorCode.UNEXPECTED_MESSAGE)


class Transport:
    """A running listener plus the sessions to and from peers.

    Attributes:
        port: the TCP port the listener got from the OS.
        identity: this node's identity.
    """

    def __init__(
        self,
        identity: Identity,
        handler: RequestHandler,
        limits: Limits,
        hello: Hello,
        nursery: trio.Nursery,
    ) -> None:
        self.identity = identity
        self.port = 0
        self._handler = handler
        self._limits = limits
        self._hello = hello
        self._nursery = nursery
        # A fresh static key per run; the identity signature binds it (specs/wire.md §3.3 Messages).
        self._static_key = secrets.token_bytes(32)
        self._sessions: dict[bytes, Session] = {}
        # Insertion-ordered (a dict, not a set): the oldest session of a node id is replaced first.
        self._all_sessions: dict[Session, None] = {}
        self._dial_locks: dict[bytes, trio.Lock] = {}
        # Pending inbound handshakes by remote address, oldest first: ticket -> the handshake's scope.
        self._handshaking: dict[str, dict[int, trio.CancelScope]] = {}
        self._handshakes = 0
        self._tickets = count()
        self.refused_connections = 0
        self.failed_handshakes = 0
        self.evicted_handshakes = 0

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def session_count(self) -> int:
        return len(self._all_sessions)

    @property
    def pending_handshakes(self) -> int:
        """Inbound connections not yet authenticated."""
        return self._handshakes

    def sessions(self) -> list[Session]:
        return [s for s in self._all_sessions if s.is_open]

    def _new_connection(self, role: Role, expected: bytes | None) -> Connection:
        return Connection(
            role,
            identity=self.identity,
            static_key=self._static_key,
            ephemeral_key=secrets.token_bytes(32),
            hello=self._hello,
            expected_node_id=expected,
        )

    def _forget(self, session: Session) -> None:
        self._all_sessions.pop(session, None)
        if self._sessions.get(session.peer_node_id) is session:
            del self._sessions[session.peer_node_id]

    def _same_node(self, node_id: bytes) -> list[Session]:
        """Open sessions with ``node_id``, oldest first."""
        return [s for s in self._all_sessions if s.peer_node_id == node_id and s.is_open]

    def _has_room(self, node_id: bytes) -> bool:
        """Whether a new session with ``node_id`` fits under ``max_peers`` (a replaced one frees its place)."""
        replaced = len(self._same_node(node_id)) >= self._limits.max_sessions_per_node
        return replaced or len(self._all_sessions) < self._limits.max_peers

    def _admit(self, stream: trio.SocketStream, conn: Connection) -> Session:
        """Register an authenticated session, closing the oldest of its node id past the bound."""
        session = Session(stream, conn, self._handler, self._limits, self._forget)
        same = self._same_node(session.peer_node_id)
        for old in same[: max(0, len(same) + 1 - self._limits.max_sessions_per_node)]:
            log.info("replacing an older session with %s", old.peer_node_id.hex())
            old.close()
            self._forget(old)
        self._all_sessions[session] = None
        # The newest session with a peer becomes the one reused for it.
        self._sessions[session.peer_node_id] = session
        return session

    async def _start_session(self, stream: trio.SocketStream, conn: Connection) -> Session:
        session = self._admit(stream, conn)
        await self._nursery.start(session.run)
        return session

    # ------------------------------------------------------------- dialling
    async def connect(self, node_id: bytes, host: str, port: int) -> Session:
        """Return the open session with ``node_id``, dialling it if needed.

        Raises:
            SessionBroken: the connection or handshake failed, or the node at
                host:port is not ``node_id`` (code IDENTITY_MISMATCH).
            TransportError: too many sessions (``Limits.max_peers``).
        """
        session = self._sessions.get(node_id)
        if session is not None and session.is_open:
            return session
        lock = self._dial_locks.setdefault(node_id, trio.Lock())
        try:
            async with lock:
                session = self._sessions.get(node_id)
                if session is not None and session.is_open:
                    return session
                if not self._has_room(node_id):
                    raise TransportError("too many sessions (max_peers)")
                return await self._dial(node_id, host, port)
        finally:
            if not lock.statistics().tasks_waiting and not lock.locked():
                self._dial_locks.pop(node_id, None)

    async def _dial(self, node_id: bytes, host: str, port: int) -> Session:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise SessionBroken(f"cannot reach {host}:{port}: {exc}") from None
        try:
            conn = self._new_connection(Role.INITIATOR, node_id)
            with trio.fail_after(self._limits.handshake_timeout):
                await _establish(stream, conn, HANDSHAKE_READ_SIZE)
        except ProtocolError as exc:
            await trio.aclose_forcefully(stream)
            log.warning("handshake with %s:%d failed: %s (%s)", host, port, exc, exc.code.name)
            raise SessionBroken(f"handshake failed: {exc}", exc.code) from None
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, SessionBroken) as exc:
            await trio.aclose_forcefully(stream)
            raise SessionBroken(f"handshake with {host}:{port} failed: {exc!r}", ErrorCode.HANDSHAKE_FAILED) from None
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return await self._start_session(stream, conn)

    # ------------------------------------------------------------- listening
    async def _accept(self, stream: trio.SocketStream) -> None:
        try:
            ip = str(stream.socket.getpeername()[0])
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        if self._handshakes >= self._limits.max_handshakes:
            self._evict_handshake()
        ticket = next(self._tickets)
        scope = trio.CancelScope(deadline=trio.current_time() + self._limits.handshake_timeout)
        self._handshaking.setdefault(ip, {})[ticket] = scope
        self._handshakes += 1
        try:
            conn = await self._handshake_inbound(stream, scope)
        finally:
            # The slot is free once the handshake is over (unless an eviction freed it already).
            pending = self._handshaking.get(ip, {})
            if pending.pop(ticket, None) is not None:
                self._handshakes -= 1
            if not pending:
                self._handshaking.pop(ip, None)
        if conn is None:
            await trio.aclose_forcefully(stream)
            return
        assert conn.peer_node_id is not None
        if not self._has_room(conn.peer_node_id):
            self.refused_connections += 1
            await trio.aclose_forcefully(stream)
            return
        session = self._admit(stream, conn)
        await session.run()

    def _evict_handshake(self) -> None:
        """Make room for a newcomer: cancel the oldest pending handshake of the busiest address."""
        ip = max(self._handshaking, key=lambda a: len(self._handshaking[a]))
        pending = self._handshaking[ip]
        scope = pending.pop(next(iter(pending)))
        if not pending:
            del self._handshaking[ip]
        self._handshakes -= 1
        self.evicted_handshakes += 1
        scope.cancel()

    async def _handshake_inbound(self, stream: trio.SocketStream, scope: trio.CancelScope) -> Connection | None:
        """Run the responder's handshake under ``scope``; the connection, or None if it failed."""
        conn = self._new_connection(Role.RESPONDER, None)
        try:
            with scope:
                await _establish(stream, conn, HANDSHAKE_READ_SIZE)
        except (ProtocolError, SessionBroken, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.failed_handshakes += 1
            log.info("inbound handshake failed: %s", exc)
            return None
        except Exception:
            # Never let one connection take the listener down.
            self.failed_handshakes += 1
            log.exception("inbound handshake crashed")
            return None
        if scope.cancelled_caught:
            # Timed out, or evicted (counted by _evict_handshake).
            self.failed_handshakes += trio.current_time() >= scope.deadline
            return None
        return conn


@asynccontextmanager
async def open_transport(
    identity: Identity,
    handler: RequestHandler,
    *,
    payment_key: bytes,
    host: str = "127.0.0.1",
    port: int = 0,
    udp_port: int = 0,
    terms: dict[str, Any] | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[Transport]:
    """Listen on host:port and yield a Transport; close everything on exit.

    Args:
        identity: this node's Ed25519 identity.
        handler: serves peers' requests (see ``RequestHandler``).
        payment_key: 33-byte compressed secp256k1 key advertised in HELLO.
        host, port: where to listen; port 0 lets the OS choose
            (``Transport.port`` tells which).
        udp_port: the DHT port advertised in HELLO.
        terms: the paid-exchange terms map advertised in HELLO.
        limits: transport bounds; defaults to ``Limits()``.
    """
    limits = limits or Limits()
    tune_allocator()
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_port = int(listeners[0].socket.getsockname()[1])
    hello = Hello(
        version=WIRE_VERSION,
        node_id=identity.node_id,
        identity_key=identity.public_key,
        tcp_port=bound_port,
        udp_port=udp_port,
        payment_key=payment_key,
        terms=dict(terms or {}),
    )
    try:
        # Session tasks never raise: the caller's own exception from the body comes back unwrapped.
        async with helper_nursery() as nursery:
            transport = Transport(identity, handler, limits, hello, nursery)
            transport.port = bound_port
            await nursery.start(trio.serve_listeners, transport._accept, listeners)
            yield transport
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()
