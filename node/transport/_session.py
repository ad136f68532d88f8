"""One authenticated session with a peer: request/response over a Connection.

A session owns a trio SocketStream and a wire ``Connection``.  Its reader
task (``run``) feeds socket bytes to the connection, routes replies to the
``request`` calls waiting for them, and runs the request handler for the
peer's requests, at most ``Limits.max_inflight_requests`` at once: past that
it stops reading, so a fast peer is slowed by TCP itself (no unbounded
queue anywhere).  Writes are serialised by a lock because record nonces
must reach the wire in order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import trio

from protocol.wire import (
    FIRST_REQUEST_ERROR,
    MAX_REQUEST_ID,
    NEED_DATA,
    Chunk,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorMessage,
    GetChunk,
    Have,
    HaveReply,
    Hello,
    Message,
    Payment,
    PutChunk,
    PutOk,
    RemoteProtocolError,
    is_response,
)
from node.transport._errors import BadChunk, RequestError, RequestRefused, SessionBroken, SessionClosed
from node.transport._limits import Limits

log = logging.getLogger("mu.transport")
# The arrival ticket of the GET or PUT the current task serves (Session.in_arrival_order).
_ARRIVAL: ContextVar[int | None] = ContextVar("mu_session_arrival", default=None)

# Read size when no big record is in flight (specs/wire.md §8 Limits and defaults).
SMALL_READ_SIZE = 64 * 1024
# Reads that did not block, in a row, after which the reader yields anyway.
READS_PER_CHECKPOINT = 4
# Messages waiting for the session's writer task; senders block beyond it.
# Also the most records the writer seals into one batch.
MAX_SEND_QUEUE = 16
# The writer adds queued messages to a batch while the batch's data sections
# total less than this: small records share a write, a chunk ends the batch.
SEND_BATCH_SIZE = 256 * 1024


# Kernel socket buffers per session: room for a whole 1 MiB record (plus the
# next one) in flight, so each record costs one write and few reads.
SOCKET_BUFFER_SIZE = 4 * 1024 * 1024


def _tune_socket(stream: trio.SocketStream) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            stream.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)
        except OSError:  # the kernel caps it; the default still works
            pass


class RequestHandler(Protocol):
    """Serves a peer's requests; the paid-exchange layer wraps one of these.

    ``handle_request`` returns the reply (its request_id is set by the
    session), or None for messages that need no reply.  Raising
    ``RequestRefused`` answers with ERROR; any other exception is logged and
    answered with ERROR INTERNAL, and the session stays up.
    """

    async def handle_request(self, session: Session, message: Message) -> Message | None: ...


def _data_size(message: Message) -> int:
    return len(message.data) if isinstance(message, (Chunk, PutChunk)) else 0


async def _acquire(semaphore: trio.Semaphore) -> None:
    """Take a slot; yield to the scheduler only when none is free.

    The hot paths (a request, a served request, a written record) each
    block once where they must, instead of twice per trio primitive.
    """
    try:
        semaphore.acquire_nowait()
    except trio.WouldBlock:
        await semaphore.acquire()


class _Pending:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Message | None = None


class Session:
    """An open session; create it with ``Transport.connect``, never directly."""

    def __init__(
        self,
        stream: trio.SocketStream,
        conn: Connection,
        handler: RequestHandler,
        limits: Limits,
        on_close: Callable[[Session], None],
    ) -> None:
        assert conn.peer_node_id is not None and conn.peer_hello is not None
        self._stream = stream
        _tune_socket(stream)
        self._conn = conn
        self._handler = handler
        self._limits = limits
        self._on_close = on_close
        self.peer_node_id: bytes = conn.peer_node_id
        self.peer_hello: Hello = conn.peer_hello
        # Outgoing messages wait here for the writer task, which seals and
        # writes them one at a time: records leave whole and in nonce order
        # even when a caller's timeout fires mid-write.
        self._outgoing_send, self._outgoing_receive = trio.open_memory_channel[Message](MAX_SEND_QUEUE)
        self._pending: dict[int, _Pending] = {}
        self._pending_slots = trio.Semaphore(limits.max_pending_requests)
        # Set (and dropped) when a pending slot or a place in the send queue
        # frees up while someone waits in ``queue_room``.
        self._room: trio.Event | None = None
        self._handler_slots = trio.Semaphore(limits.max_inflight_requests)
        self._next_id = 1
        self._closed: BaseException | None = None
        # Arrival order of served GETs and PUTs (in_arrival_order): tickets
        # handed out, the lowest not yet through, and those through out of turn.
        self._arrivals = 0
        self._turn = 0
        self._passed: set[int] = set()
        self._turn_changed = trio.Event()
        self._cancel_scope: trio.CancelScope | None = None
        self._done = trio.Event()

    # ------------------------------------------------------------ properties
    @property
    def is_open(self) -> bool:
        return self._closed is None

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    def __repr__(self) -> str:
        return f"<Session peer={self.peer_node_id.hex()[:12]} {'open' if self.is_open else 'closed'}>"

    # --------------------------------------------------------------- sending
    def can_queue(self) -> bool:
        """Whether a request queued now goes into the send queue without waiting (or fails at once: closed)."""
        return self._closed is not None or (
            self._pending_slots.value > 0
            and self._outgoing_send.statistics().current_buffer_used < MAX_SEND_QUEUE)

    async def queue_room(self) -> None:
        """Wait until ``can_queue``.

        A paid request waits here before it signs its payment: from the
        signature to the send queue nothing then waits, so no cancellation
        can leave a payment signed and recorded that never left
        (specs/payments.md §Paid window).  Other tasks may fill the queue
        again as soon as this one yields: check ``can_queue`` after it.
        """
        while not self.can_queue():
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()

    def _made_room(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    async def _send(self, message: Message) -> None:
        if self._closed is not None:
            raise self._closed_error()
        try:
            try:
                self._outgoing_send.send_nowait(message)
            except trio.WouldBlock:
                await self._outgoing_send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed_error() from None

    async def _writer(self) -> None:
        """Seal and write queued messages; the only task that writes records.

        Whatever is queued when the writer wakes leaves in one batch: sealed
        back to back into the connection's reused buffer and written with
        one system call (specs/wire.md §8 Limits and defaults, SEND_BATCH_SIZE).
        """
        fd = self._stream.socket.fileno()
        queue = self._outgoing_receive
        while True:
            try:
                message = queue.receive_nowait()
            except trio.WouldBlock:
                try:
                    message = await queue.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            self._made_room()
            batch = [message]
            size = _data_size(message)
            while size < SEND_BATCH_SIZE and len(batch) < MAX_SEND_QUEUE:
                try:
                    message = queue.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break  # a closed queue ends the loop above, once this batch is out
                batch.append(message)
                size += _data_size(message)
            # One batch at a time, so the connection's reused buffer is safe.
            data = self._conn.send_batch(batch)
            try:
                await self._write_all(fd, data)
            finally:
                data.release()

    async def _write_all(self, fd: int, data: memoryview) -> None:
        """Write one whole record, waiting only while the socket buffer is full.

        Plain non-blocking writes: trio's send_all would add two scheduler
        round trips per write, and the writer already yields once per message
        (its channel receive).
        """
        sent, size = 0, len(data)
        while sent < size:
            try:
                sent += os.write(fd, data[sent:] if sent else data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._stream.socket)
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc}") from exc

    def _allocate_id(self) -> int:
        while True:
            rid = self._next_id
            self._next_id = rid + 1 if rid < MAX_REQUEST_ID else 1
            if rid not in self._pending:
                return rid

    async def request(self, message: Message, *, meanwhile: Callable[[], Awaitable[None]] | None = None) -> Message:
        """Send a request and wait for its reply.

        The message's request_id is replaced by a fresh one.  The caller owns
        the timeout (``with trio.fail_after(...)``); a reply arriving after
        the caller gave up is dropped.  ``meanwhile``, if given, is awaited
        once the request is in the send queue (requests leave in queue
        order) and before the wait for the reply: work of the caller's own
        that overlaps the round trip, without a task of its own.

        Raises:
            RequestError: the peer answered with ERROR.
            SessionBroken / SessionClosed: the session ended first.
        """
        await _acquire(self._pending_slots)
        try:
            rid = self._allocate_id()
            pending = _Pending()
            self._pending[rid] = pending
            try:
                await self._send(dataclasses.replace(message, request_id=rid))  # type: ignore[type-var]
                if meanwhile is not None:
                    await meanwhile()
                await pending.event.wait()
            finally:
                del self._pending[rid]
        finally:
            self._pending_slots.release()
            self._made_room()
        if pending.reply is None:
            assert self._closed is not None
            raise self._closed_error()
        if isinstance(pending.reply, ErrorMessage):
            raise RequestError(pending.reply)
        return pending.reply

    async def get_chunk(self, address: bytes, payment: Payment = None, *,
                        meanwhile: Callable[[], Awaitable[None]] | None = None) -> bytes:
        """Fetch a chunk; raises BadChunk unless SHA-256(bytes) == address (``meanwhile``: see ``request``)."""
        reply = await self.request(GetChunk(request_id=0, address=address, payment=payment), meanwhile=meanwhile)
        if not isinstance(reply, Chunk) or reply.address != address:
            raise SessionBroken(f"GET_CHUNK answered with {type(reply).__name__}", ErrorCode.UNEXPECTED_MESSAGE)
        if hashlib.sha256(reply.data).digest() != address:
            raise BadChunk(f"peer {self.peer_node_id.hex()} sent bytes that do not hash to {address.hex()}")
        return reply.data

    async def put_chunk(self, address: bytes, data: bytes, payment: Payment = None, *,
                        meanwhile: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Store a chunk on the peer; True if it was new there (``meanwhile``: see ``request``)."""
        reply = await self.request(PutChunk(request_id=0, address=address, data=data, payment=payment),
                                   meanwhile=meanwhile)
        if not isinstance(reply, PutOk) or reply.address != address:
            raise SessionBroken(f"PUT_CHUNK answered with {type(reply).__name__}", ErrorCode.UNEXPECTED_MESSAGE)
        return reply.stored

    async def have(self, addresses: tuple[bytes, ...]) -> tuple[bool, ...]:
        """Ask which of ``addresses`` the peer holds."""
        reply = await self.request(Have(request_id=0, addresses=tuple(addresses)))
        if not isinstance(reply, HaveReply) or len(reply.present) != len(addresses):
            raise SessionBroken("HAVE answered with a wrong reply", ErrorCode.UNEXPECTED_MESSAGE)
        return reply.present

    async def notify(self, message: Message) -> None:
        """Send a message that expects no reply (e.g. a channel update)."""
        await self._send(message)

    # ---------------------------------------------------------------- reader
    def _closed_error(self) -> Exception:
        if isinstance(self._closed, (SessionBroken, SessionClosed)):
            return type(self._closed)(str(self._closed), self._closed.code)
        return SessionClosed(f"session closed: {self._closed}")

    def _fail(self, reason: BaseException) -> None:
        if self._closed is None:
            self._closed = reason
            self._outgoing_send.close()
            self._made_room()
        for pending in self._pending.values():
            pending.event.set()
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def close(self) -> None:
        """Close the session; waiting requests raise SessionClosed."""
        self._fail(SessionClosed("closed locally"))

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the session until it closes; always closes the socket."""
        final_error: ErrorCode | None = None
        try:
            with trio.CancelScope() as scope:
                self._cancel_scope = scope
                if self._closed is not None:
                    scope.cancel()
                async with trio.open_nursery() as nursery:
                    task_status.started()
                    try:
                        async with trio.open_nursery() as io:
                            io.start_soon(self._writer)
                            await self._read_loop(nursery)
                            io.cancel_scope.cancel()
                    except BaseExceptionGroup as group:
                        # Reader and writer fail alone or together; report the first.
                        fatal = self._first_error(group)
                    except Exception as exc:
                        fatal = exc
                    else:
                        fatal = None
                    if isinstance(fatal, RemoteProtocolError):
                        log.error("session with %s ended: %s (%s)", self.peer_node_id.hex(), fatal, fatal.code.name)
                        self._fail(SessionBroken(str(fatal), fatal.code))
                        final_error = fatal.code
                    elif isinstance(fatal, (trio.BrokenResourceError, trio.ClosedResourceError)):
                        self._fail(SessionBroken(f"connection lost: {fatal}"))
                    elif fatal is not None:
                        # A bug must cost this session only, never the node.
                        log.error("session with %s failed", self.peer_node_id.hex(), exc_info=fatal)
                        self._fail(SessionBroken(f"internal error: {fatal!r}", ErrorCode.INTERNAL))
                    nursery.cancel_scope.cancel()
            if final_error is not None:
                await self._send_final_error(final_error)
        finally:
            self._fail(SessionClosed("session ended"))
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self._stream.aclose()
            self._on_close(self)
            self._done.set()

    @staticmethod
    def _first_error(group: BaseExceptionGroup) -> BaseException | None:  # type: ignore[type-arg]
        for exc in group.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                inner = Session._first_error(exc)
                if inner is not None:
                    return inner
            elif not isinstance(exc, trio.Cancelled):
                if not isinstance(exc, Exception):
                    raise group
                return exc
        raise group

    async def _send_final_error(self, code: ErrorCode) -> None:
        # Best effort: tell the peer why, but never wait long for it.
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                data = self._conn.send(ErrorMessage(request_id=0, code=code))
                await self._stream.send_all(data)
            except Exception:  # the socket may be gone; nothing more to do
                pass

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        conn = self._conn
        sock = self._stream.socket
        fd = sock.fileno()
        receive_size = self._limits.receive_size
        lowat = 1
        unyielded = 0  # reads since the reader last yielded to the scheduler
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                # While a big record is arriving, let the kernel wake us only
                # once all of it is there (SO_RCVLOWAT; epoll still reports EOF
                # and errors at once): one wakeup per record instead of one per
                # loopback segment, which on a busy machine costs a timeslice.
                wanted = conn.wanted
                target = wanted if wanted > SMALL_READ_SIZE else 1
                if target != lowat:
                    lowat = target
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
                    except OSError:  # not supported: plain wakeups still work
                        pass
                # Read straight into the connection's buffer: no copy per read.
                # Small reads unless a big record is under way (bounded buffers).
                size = min(receive_size, max(SMALL_READ_SIZE, wanted + SMALL_READ_SIZE))
                with conn.get_buffer(size) as view:
                    try:
                        got = os.readv(fd, (view,))
                    except BlockingIOError:
                        got = -1
                    except OSError as exc:
                        raise trio.BrokenResourceError(f"recv failed: {exc}") from exc
                if got < 0:
                    # Nothing to read: wait (the only place the reader blocks),
                    # at most idle_timeout.
                    unyielded = 0
                    with trio.move_on_after(self._limits.idle_timeout) as idle:
                        await trio.lowlevel.wait_readable(sock)
                    if idle.cancelled_caught:
                        if self._pending or self._handler_slots.value < self._limits.max_inflight_requests:
                            continue
                        log.info("session with %s idle; closing", self.peer_node_id.hex())
                        self._fail(SessionClosed("idle timeout"))
                        return
                    continue
                if got:
                    conn.buffer_updated(got)
                else:
                    conn.receive_data(b"")
                # Reads that do not block still let other tasks run (and
                # cancellation in), but only every READS_PER_CHECKPOINT of them:
                # a chunk record arrives in two or three reads, and the wait
                # for the next one is a checkpoint already.
                unyielded += 1
                if unyielded >= READS_PER_CHECKPOINT:
                    unyielded = 0
                    await trio.lowlevel.checkpoint()
                continue
            if isinstance(event, ConnectionClosed):
                self._fail(SessionBroken("peer closed the connection"))
                return
            message: Message = event  # type: ignore[assignment]
            if is_response(message):
                pending = self._pending.get(message.request_id)
                if pending is not None and pending.reply is None:
                    pending.reply = message
                    pending.event.set()
                # Otherwise the caller gave up (timeout); the late reply is dropped.
                continue
            if isinstance(message, ErrorMessage):
                # request_id 0: the peer is ending the session and says why.
                log.warning("peer %s sent ERROR %s %s", self.peer_node_id.hex(), message.code, message.message)
                if message.code < FIRST_REQUEST_ERROR:
                    self._fail(SessionBroken(f"peer error {message.code}: {message.message}", message.code))
                    return
                continue
            await _acquire(self._handler_slots)
            ticket = None
            if isinstance(message, (GetChunk, PutChunk)):
                ticket = self._arrivals  # see in_arrival_order
                self._arrivals += 1
            nursery.start_soon(self._serve, message, ticket)

    async def _serve(self, message: Message, ticket: int | None = None) -> None:
        if ticket is not None:
            _ARRIVAL.set(ticket)  # this task's own context (in_arrival_order)
        try:
            try:
                reply = await self._handler.handle_request(self, message)
            except RequestRefused as refused:
                reply = ErrorMessage(
                    request_id=message.request_id, code=refused.code, message=refused.message[:256], owed=refused.owed
                )
            except (SessionBroken, SessionClosed):
                return
            except Exception:
                log.exception("request handler failed on %s", type(message).__name__)
                reply = ErrorMessage(request_id=message.request_id, code=ErrorCode.INTERNAL, message="internal error")
            if reply is None:
                return
            if reply.request_id != message.request_id:
                reply = dataclasses.replace(reply, request_id=message.request_id)  # type: ignore[type-var]
            try:
                await self._send(reply)
            except (SessionBroken, SessionClosed):
                return
        finally:
            if ticket is not None:
                self._pass(ticket)
            self._handler_slots.release()

    # ------------------------------------------------------- arrival order
    @asynccontextmanager
    async def in_arrival_order(self) -> AsyncIterator[None]:
        """For a handler serving a GET or PUT: enter once every GET and PUT that
        arrived before it on this session has left this block (or ended).

        The read loop numbers GETs and PUTs as they arrive; their handler
        tasks start in whatever order trio runs them (it shuffles a batch),
        so a payee that must charge a peer's requests in arrival order
        (specs/payments.md §Paid window) does so in here.  Outside a served
        GET or PUT it does not wait.
        """
        ticket = _ARRIVAL.get()
        if ticket is None:
            yield
            return
        while self._turn < ticket:
            await self._turn_changed.wait()
        try:
            yield
        finally:
            self._pass(ticket)

    def _pass(self, ticket: int) -> None:
        """``ticket`` is through its ordered part (idempotent): let the next one in."""
        if ticket < self._turn or ticket in self._passed:
            return
        self._passed.add(ticket)
        while self._turn in self._passed:
            self._passed.remove(self._turn)
            self._turn += 1
        event, self._turn_changed = self._turn_changed, trio.Event()
        event.set()
