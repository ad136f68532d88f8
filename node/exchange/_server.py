"""The host's request handler: chunk requests served only once paid for.

Wraps the transport's plain ``ChunkServer``: GET and PUT go through
``PayeeBook.charge`` (which returns once the payment is on disk) before
the chunk is sent or stored; a paid PUT keeps the chunk for the host's
retention period from then (a PUT of a chunk already held extends it,
specs/network.md §7); channel messages open channels and report
their state; HAVE stays free.  Every refusal is an ERROR with its own code
(specs/payments.md Part 2 §Error codes (ERROR `code`)); bad input never raises out of here
except as ``RequestRefused``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import trio

from node.exchange._payee import NOT_RUN, PayeeBook
from node.store import ChunkCorrupt, ChunkNotFound, ChunkStore, StoreFull
from node.transport import RequestRefused, Session
from node.transport import ChunkServer
from protocol.payments import Kind, LocalPaymentError
from protocol.payments.messages import OpenChannel, channel_request
from protocol.wire import ChannelMessage, Chunk, ErrorCode, GetChunk, Message, MessageType, PutChunk, PutOk

log = logging.getLogger("mu.exchange")


def refused(exc: LocalPaymentError) -> RequestRefused:
    """The transport refusal carrying a payment error's code and ``owed``."""
    return RequestRefused(exc.code, str(exc)[:256], owed=exc.owed)  # type: ignore[arg-type]


class PaidChunkServer:
    """``RequestHandler`` for a host that charges for GET and PUT."""

    def __init__(self, store: ChunkStore, book: PayeeBook, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.book = book
        self.wall_clock = wall_clock  # unix seconds: the start of a paid PUT's retention
        self._free = ChunkServer(store)
        self.served = 0  # chunks sent or stored after payment (for status/tests)

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        peer = session.peer_node_id
        try:
            if isinstance(message, GetChunk):
                return await self._get(session, message)
            if isinstance(message, PutChunk):
                return await self._put(session, message)
            if isinstance(message, ChannelMessage):
                return await self._channel(peer, message)
        except LocalPaymentError as exc:
            log.info("refused %s from %s: %s %s", type(message).__name__, peer.hex()[:12], exc.code.name, exc)
            raise refused(exc) from None
        return await self._free.handle_request(session, message)

    async def _get(self, session: Session, message: GetChunk) -> Message:
        peer = session.peer_node_id
        # The price needs only the size: a stat, not the read (in a worker
        # thread: a slow disk must not stall the event loop).
        size = await trio.to_thread.run_sync(self._size_of, message.address)
        if size is None:
            raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not found")
        if self.book.terms.free_allowance >= self.book.price(Kind.GET, size):
            # The allowance lets a payer keep a window of requests in flight
            # (specs/payments.md §Paid window): throughput over latency.  The
            # read (and its SHA-256 check) runs in the worker thread that
            # wrote the payment, right after it is on disk: one thread hop.
            async with session.in_arrival_order():  # charged in the order the peer sent them
                _, data = await self.book.charge_then(peer, kind=Kind.GET, chunk=message.address, size=size,
                                                      payment=message.payment, then=lambda: self._read(message.address))
            if data is NOT_RUN:  # a redelivery: nothing was recorded
                data = await trio.to_thread.run_sync(self._read, message.address)
        else:
            async with session.in_arrival_order():
                data = await self._charge_overlapped(peer, message, size)
        if not isinstance(data, bytes):  # what the read raised, returned from the worker thread
            log.error("chunk %s unreadable after it was paid for: %s", message.address.hex(), data)
            raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not available")
        self.served += 1
        return Chunk(request_id=message.request_id, address=message.address, data=data)

    def _size_of(self, address: bytes) -> int | None:
        """The chunk file's size, or None when there is no such chunk."""
        try:
            return self.store.path_of(address).stat().st_size
        except FileNotFoundError:
            return None

    def _read(self, address: bytes) -> bytes | Exception:
        """The chunk's bytes (SHA-256 checked by the store), or why not."""
        try:
            return self.store.get(address)
        except (ChunkNotFound, ChunkCorrupt) as exc:
            return exc

    async def _charge_overlapped(self, peer: bytes, message: GetChunk, size: int) -> bytes | Exception:
        """Charge, with the read (and its SHA-256 check) overlapping the durable record.

        One request at a time per payer (no allowance to pipeline on): the
        latency of each counts.  The chunk is sent only after both, so
        nothing is served before its payment is on disk; a chunk found
        corrupt meanwhile costs the payer that one payment (at most one
        chunk's price).
        """
        read: list[bytes | Exception] = []

        async def load() -> None:
            read.append(await trio.to_thread.run_sync(self._read, message.address))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            refusal: LocalPaymentError | None = None
            try:
                await self.book.charge(peer, kind=Kind.GET, chunk=message.address, size=size, payment=message.payment)
            except LocalPaymentError as exc:
                refusal = exc
        if refusal is not None:
            raise refusal
        return read[0]

    async def _put(self, session: Session, message: PutChunk) -> Message:
        peer = session.peer_node_id
        if hashlib.sha256(message.data).digest() != message.address:
            raise RequestRefused(ErrorCode.CORRUPT_DATA, "data does not hash to the address")
        quota = self.store.quota_bytes
        if quota is not None and self.store.used_bytes + len(message.data) > quota:
            raise RequestRefused(ErrorCode.OVER_QUOTA, "store full")  # refuse before taking money
        async with session.in_arrival_order():  # charged in the order the peer sent them
            await self.book.charge(peer, kind=Kind.PUT, chunk=message.address, size=len(message.data),
                                   payment=message.payment)
        # Retention counts from now, after the payment is on disk.
        until = int(self.wall_clock()) + self.book.terms.retention_seconds
        try:
            stored = await trio.to_thread.run_sync(
                lambda: self.store.put_retained(message.address, message.data, until, verify=False))
        except StoreFull:
            raise RequestRefused(ErrorCode.OVER_QUOTA, "store full") from None
        self.served += 1
        return PutOk(request_id=message.request_id, address=message.address, stored=bool(stored))

    async def _channel(self, peer: bytes, message: ChannelMessage) -> Message:
        if message.response:
            raise RequestRefused(ErrorCode.UNEXPECTED_MESSAGE, "unsolicited channel reply")
        if message.type == MessageType.OPEN_CHANNEL:
            state = await self.book.open_channel(peer, OpenChannel.from_wire(message.fields))
            reply_type = MessageType.CHANNEL_ACCEPTED
        elif message.type == MessageType.CHANNEL_STATE:
            state = await self.book.channel_state(peer, channel_request(message.fields))
            reply_type = MessageType.CHANNEL_STATE
        else:
            raise RequestRefused(ErrorCode.UNEXPECTED_MESSAGE, f"{message.type.name} is not served")
        return ChannelMessage(request_id=message.request_id, type=reply_type, fields=state.to_wire(), response=True)
