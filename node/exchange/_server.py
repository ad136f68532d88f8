"""The host's request handler: chunk requests served only once paid for.

Wraps the transport's plain ``ChunkServer``: GET and PUT are charged
through ``PayeeBook`` (``stage`` in the peer's arrival order, then
``committed``, which returns once the payment is on disk) before the chunk
is sent or stored; a paid PUT keeps the chunk for the host's
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

from node.exchange._balance import BalanceBook, settle_balance
from node.exchange._payee import PayeeBook
from node.store import ChunkCorrupt, ChunkNotFound, ChunkStore, StoreFull
from node.transport import RequestRefused, Session
from node.transport import ChunkServer
from protocol.payments import Kind, LocalPaymentError
from protocol.payments.messages import OpenChannel, channel_request
from protocol.erasure import AuditChallenge, audit_answer
from protocol.wire import (
    Audit, AuditProof, ChannelMessage, Chunk, ErrorCode, GetChunk, Message, MessageType, PutChunk, PutOk, SyncNotify,
)

log = logging.getLogger("mu.exchange")

# Unpaid audit probes a peer may have answered and not yet paid for (specs/erasure.md §7.4 Paid audits):
# a host's unpaid work for an owner is at most one audit.  The peers so counted are bounded too; past the
# bound the oldest is forgotten (it gets one more probe).
MAX_UNPAID_AUDITS = 1
MAX_AUDITING_PEERS = 10_000


def refused(exc: LocalPaymentError) -> RequestRefused:
    """The transport refusal carrying a payment error's code and ``owed``."""
    return RequestRefused(exc.code, str(exc)[:256], owed=exc.owed)  # type: ignore[arg-type]


class PaidChunkServer:
    """``RequestHandler`` for a host that charges for GET and PUT."""

    def __init__(self, store: ChunkStore, book: PayeeBook, *, wall_clock: Callable[[], float] = time.time,
                 balance: BalanceBook | None = None) -> None:
        self.store = store
        self.book = book
        # Peers in balance mode are served against the service balance, not paid (specs/payments.md
        # §Service balance); None: every peer pays.
        self.balance = balance
        self.wall_clock = wall_clock  # unix seconds: the start of a paid PUT's retention
        self._free = ChunkServer(store)
        self._unpaid_audits: dict[bytes, int] = {}  # peer -> probes answered since its last charged audit
        self.served = 0  # chunks sent or stored after payment (for status/tests)
        # Who hears SYNC_NOTIFY (the sync service, specs/sync.md §16 Notify); None: dropped.
        self.on_sync_notify: Callable[[bytes, SyncNotify], None] | None = None

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        peer = session.peer_node_id
        if isinstance(message, SyncNotify):
            if self.on_sync_notify is not None:
                self.on_sync_notify(peer, message)
            return None  # one-way: never answered, not even with ERROR
        try:
            if isinstance(message, GetChunk):
                return await self._get(session, message)
            if isinstance(message, PutChunk):
                return await self._put(session, message)
            if isinstance(message, ChannelMessage):
                return await self._channel(session, message)
            if isinstance(message, Audit):
                return await self._audit(session, message)
        except LocalPaymentError as exc:
            log.info("refused %s from %s: %s %s", type(message).__name__, peer.hex()[:12], exc.code.name, exc)
            raise refused(exc) from None
        return await self._free.handle_request(session, message)

    async def _get(self, session: Session, message: GetChunk) -> Message:
        peer = session.peer_node_id
        # The records of the requests being read join the group being formed
        # (specs/payments.md §Ledger, "Grouped host commits").
        with self.book.coming():
            # The read first (in a worker thread: a slow disk must not stall
            # the event loop): the price needs the size.  Its SHA-256 is
            # checked only once the decision is to serve it, before anything
            # is charged: a refused request costs no hash (specs/payments.md
            # §Payment field of GET and PUT).
            data = await trio.to_thread.run_sync(self._read, message.address)
            if isinstance(data, ChunkNotFound):
                raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not found")
            if not isinstance(data, bytes):
                log.error("chunk %s unreadable: %s", message.address.hex(), data)
                raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not available")
            chunk = data
            if self._balanced(session):
                # Checked before the balance records it: rotten bytes are refused, never charged.
                self._check(message.address, chunk)
                await self.balance.serve(session, self.book.price(Kind.GET, len(data)))  # type: ignore[union-attr]
                staged = None
            else:
                # Charged in the order the peer sent them (specs/payments.md §Paid
                # window); the answer waits for the record's group to commit, while
                # the peer's next requests are decided.
                async with session.in_arrival_order():
                    staged = await self.book.stage(peer, kind=Kind.GET, chunk=message.address, size=len(data),
                                                   payment=message.payment,
                                                   confirm=lambda: self._check(message.address, chunk))
        if staged is not None:
            await self.book.committed(staged)
        self.served += 1
        return Chunk(request_id=message.request_id, address=message.address, data=data)

    async def _audit(self, session: Session, message: Audit) -> Message:
        """Answer a storage audit over the bytes we hold (specs/erasure.md §7.1, §7.4 Paid audits).

        A probe (no ``charge``) is answered unpaid, at most
        ``MAX_UNPAID_AUDITS`` per peer before it pays; a charged audit (the
        owner checked the probe's proof) is charged as kind audit, named by
        its nonce, and answered once its record is on disk.  Read without
        the store's hash check: the proof is over what is on disk, so a
        share that rotted fails its audit instead of vanishing.
        """
        peer = session.peer_node_id
        challenge = AuditChallenge(address=message.address, nonce=bytes(message.nonce), offset=message.offset,
                                   length=message.length)
        if not message.charge and self._unpaid_audits.get(peer, 0) >= MAX_UNPAID_AUDITS:
            price = self.book.price(Kind.AUDIT, message.length)
            raise RequestRefused(ErrorCode.INSUFFICIENT_PAYMENT, "the last audit answered is not paid for",
                                 owed=price)
        try:
            data = await trio.to_thread.run_sync(lambda: self.store.get(message.address, verify=False))
        except (ChunkNotFound, ChunkCorrupt):
            raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not found") from None
        if message.charge and self._balanced(session):
            await self.balance.serve(session, self.book.price(Kind.AUDIT, message.length))  # type: ignore[union-attr]
            self._unpaid_audits.pop(peer, None)
        elif message.charge:
            with self.book.coming():
                async with session.in_arrival_order():
                    staged = await self.book.stage(peer, kind=Kind.AUDIT, chunk=challenge.nonce, size=message.length,
                                                   payment=message.payment)
            await self.book.committed(staged)
            self._unpaid_audits.pop(peer, None)
        else:
            self._unpaid_audits[peer] = self._unpaid_audits.pop(peer, 0) + 1
            if len(self._unpaid_audits) > MAX_AUDITING_PEERS:
                del self._unpaid_audits[next(iter(self._unpaid_audits))]
        return AuditProof(request_id=message.request_id, proof=audit_answer(challenge, data))

    def _read(self, address: bytes) -> bytes | Exception:
        """The chunk's bytes, not yet checked against ``address`` (``_check``), or why not."""
        try:
            return self.store.get(address, verify=False)
        except (ChunkNotFound, ChunkCorrupt) as exc:
            return exc

    @staticmethod
    def _check(address: bytes, data: bytes) -> None:
        """The store's read check (specs/chunks.md §8.2): never serve bytes that do not hash to ``address``.

        In the event loop, as a PUT's check is (hashlib releases the GIL).

        Raises:
            RequestRefused(NOT_FOUND): the chunk rotted on disk.
        """
        if hashlib.sha256(data).digest() != address:
            log.error("chunk %s is corrupt on disk", address.hex())
            raise RequestRefused(ErrorCode.NOT_FOUND, "chunk not available")

    async def _put(self, session: Session, message: PutChunk) -> Message:
        peer = session.peer_node_id
        if hashlib.sha256(message.data).digest() != message.address:
            raise RequestRefused(ErrorCode.CORRUPT_DATA, "data does not hash to the address")
        quota = self.store.quota_bytes
        if quota is not None and self.store.used_bytes + len(message.data) > quota:
            raise RequestRefused(ErrorCode.OVER_QUOTA, "store full")  # refuse before taking money
        # A renewal is its own charge, named by its id: a PUT of the same chunk as a recent one would be
        # a redelivery, served free (specs/erasure.md §9 Renewal).
        kind, charged = (Kind.PUT, message.address) if message.renewal is None else (Kind.RENEW, message.renewal)
        if self._balanced(session):
            await self.balance.serve(session, self.book.price(kind, len(message.data)))  # type: ignore[union-attr]
        else:
            with self.book.coming():
                async with session.in_arrival_order():  # charged in the order the peer sent them
                    staged = await self.book.stage(peer, kind=kind, chunk=charged, size=len(message.data),
                                                   payment=message.payment)
            await self.book.committed(staged)
        # Retention counts from now, after the payment is on disk.
        until = int(self.wall_clock()) + self.book.terms.retention_seconds
        try:
            stored = await trio.to_thread.run_sync(
                lambda: self.store.put_retained(message.address, message.data, until, verify=False))
        except StoreFull:
            raise RequestRefused(ErrorCode.OVER_QUOTA, "store full") from None
        self.served += 1
        return PutOk(request_id=message.request_id, address=message.address, stored=bool(stored))

    def _balanced(self, session: Session) -> bool:
        """True when ``session``'s peer is served against the service balance (both offer storage)."""
        return self.balance is not None and self.balance.active(session)

    async def _channel(self, session: Session, message: ChannelMessage) -> Message | None:
        peer = session.peer_node_id
        if message.response:
            raise RequestRefused(ErrorCode.UNEXPECTED_MESSAGE, "unsolicited channel reply")
        if message.type == MessageType.BALANCE_ACK and self.balance is not None and self._balanced(session):
            await settle_balance(session, message, self.balance, self.book)  # one-way: never answered
            return None
        if message.type == MessageType.OPEN_CHANNEL:
            state = await self.book.open_channel(peer, OpenChannel.from_wire(message.fields))
            reply_type = MessageType.CHANNEL_ACCEPTED
        elif message.type == MessageType.CHANNEL_STATE:
            state = await self.book.channel_state(peer, channel_request(message.fields))
            reply_type = MessageType.CHANNEL_STATE
        else:
            raise RequestRefused(ErrorCode.UNEXPECTED_MESSAGE, f"{message.type.name} is not served")
        return ChannelMessage(request_id=message.request_id, type=reply_type, fields=state.to_wire(), response=True)
