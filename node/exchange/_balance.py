"""The service balance in the exchange: the I/O around ``protocol.payments.balance``.

Two nodes that both offer storage (terms ``offer`` > 0) are in balance mode
with each other: their GET, PUT, renewal and charged audit requests carry no
channel payment, and each side keeps one running balance of the service
given and taken (specs/payments.md §Service balance).  ``BalanceBook`` holds
our view of every such peer's balance (``PeerBalance``, the pure machine
decides every step) and carries the steps out:

- as the server (rule 1, ``serve``): the machine refuses past the disconnect
  threshold or the in-flight limit, else ``given += price`` is on disk
  before the caller serves;
- as the requester (rule 2, ``request``): at most ``in_flight_limit`` of
  requests outstanding; each answer is recorded (``taken += price``), then
  acknowledged with a signed BALANCE_ACK;
- acknowledgements received (rule 5) move ``acked_given``, and the first one
  of a session resynchronises (rule 6) when no other session with the peer
  is open (``received``); each side sends its own first on a new session
  (``greet``).

Writes of one peer's view go to disk one at a time, the whole view each
time, so acknowledgements (which may be written lazily) ride along with
the next step that must be durable.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from node.exchange._link import HostLink, PendingRecord
from node.exchange._window import Body, Paid
from node.exchange._window import _send as send_request  # the session call of one request, shared with the paid window
from node.ledger import Ledger, LedgerError, PaymentEntry
from node.transport import RequestError, RequestRefused, Session
from protocol.identity import Identity
from node.exchange._payee import PayeeBook
from protocol.payments import (Direction, Kind, LocalPaymentError, PaymentError, PaymentErrorCode,
                               RemotePaymentError, Terms)
from protocol.payments.messages import Payment
from protocol.payments.payee import price_of
from protocol.payments.payer import LinkTotals, Request
from protocol.payments.balance import (BalanceAck, BalanceError, BalanceErrorCode, BalanceTerms, PeerBalance,
                                       in_balance_mode)
from protocol.wire import ChannelMessage, MessageType

log = logging.getLogger("mu.balance")

T = TypeVar("T")

# Bound on the sessions whose mode and greeting are remembered; closed ones are dropped first.
MAX_TRACKED_SESSIONS = 10_000
# A quarter of the in-flight limit may go unacknowledged while more answers are being recorded; the
# requester keeps the rest of the limit for its requests in flight (specs/payments.md §Service balance).
ACK_EVERY_DIVISOR = 4
# Bound on the peers whose view is kept in memory; idle ones are dropped past it (the ledger has them all).
MAX_CACHED_BALANCES = 10_000
# How often a request refused WINDOW_FULL is sent again: the acknowledgements
# sent before it may still be on their way into the server's book (its
# handler tasks run in any order), never more than a window of them.
WINDOW_FULL_RETRIES = 8


@dataclass(slots=True)
class _Write:
    """One write of a peer's view under way: every step up to ``upto`` is on disk once ``done`` is set."""

    upto: int
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None


@dataclass(slots=True)
class _Peer:
    """Our view of one peer: the balance in memory, what of it is on disk, and our requests outstanding."""

    lock: trio.Lock = field(default_factory=trio.Lock)
    balance: PeerBalance | None = None  # None: (re)load from the ledger
    durable: PeerBalance | None = None  # the latest view on disk: what an acknowledgement may claim
    version: int = 0  # steps taken in memory
    written: int = 0  # steps on disk
    failed_upto: int = -1  # steps lost with a failed write: their callers fail
    writing: _Write | None = None
    outstanding: int = 0  # value of our requests to the peer sent and not yet acknowledged
    receiving: int = 0  # service or payments of the peer being recorded now (``_receive``)
    room: trio.Event = field(default_factory=trio.Event)  # set (and replaced) when ``outstanding`` drops
    last_sent: tuple[Session, int, int] | None = None  # the session and totals of our latest acknowledgement
    # Sessions with the peer that had their first acknowledgement (rule 6), or were served first: closed ones
    # are dropped whenever one is added (a peer has few sessions at once, Limits.max_sessions_per_node).
    synced: dict[Session, None] = field(default_factory=dict)

    def idle(self) -> bool:
        """Nothing of this peer's is under way or unwritten: the slot may be dropped and reloaded later."""
        return (not self.lock.locked() and self.writing is None and self.outstanding == 0
                and self.written == self.version and not any(s.is_open for s in self.synced))

    def sync(self, session: Session) -> None:
        self.synced = {s: None for s in self.synced if s.is_open}
        self.synced[session] = None


class BalanceBook:
    """Our service balances with the peers in balance mode (see the module docstring).

    Args:
        ledger: where each peer's view is recorded (table ``balances``).
        identity: signs our acknowledgements.
        offer: bytes we host for reciprocating peers; 0 keeps every peer paid as before.
        terms: our thresholds (specs/payments.md §Service balance, "Definitions").
    """

    def __init__(self, *, ledger: Ledger, identity: Identity, offer: int,
                 terms: BalanceTerms | None = None) -> None:
        self.ledger = ledger
        self.identity = identity
        self.offer = offer
        self.terms = terms if terms is not None else BalanceTerms()
        # Service a requester may leave unacknowledged while more of it is being recorded (``take``).
        self.ack_every = self.terms.in_flight_limit // ACK_EVERY_DIVISOR
        self._peers: dict[bytes, _Peer] = {}
        self._modes: dict[Session, bool] = {}
        self._greeted: dict[Session, None] = {}
        self.acks_sent = 0  # for tests and benchmarks
        self.acked = trio.Event()  # set (and replaced) whenever a peer's acknowledgement is taken in

    # -- mode ------------------------------------------------------------------

    def active(self, session: Session) -> bool:
        """True when we and ``session``'s peer are in balance mode (both offer; its terms verified once)."""
        mode = self._modes.get(session)
        if mode is None:
            mode = False
            if self.offer > 0:
                hello = session.peer_hello
                try:
                    mode = in_balance_mode(self.offer, Terms.from_wire(hello.terms, hello.identity_key).offer)
                except LocalPaymentError:  # bad terms: the paid path refuses them
                    mode = False
            _remember(self._modes, session, mode)
        return mode

    def view(self, peer: bytes) -> PeerBalance | None:
        """Our view of ``peer``'s balance in memory (None: not loaded since start)."""
        slot = self._peers.get(peer)
        return slot.balance if slot is not None else None

    # -- server: rule 1 ----------------------------------------------------------

    async def serve(self, session: Session, price: int) -> None:
        """Charge ``session``'s peer ``price`` of service; return once it is on disk (serve only then).

        Raises:
            RequestRefused(DISCONNECT_THRESHOLD or WINDOW_FULL): not served, nothing recorded.
            LedgerError, sqlite3.Error: the record failed; not served.
        """
        await self.greet(session)
        peer = session.peer_node_id
        slot = self._slot(peer)
        if session not in slot.synced:
            # A peer that did not send its acknowledgement first has none to resynchronise from on
            # this session: its later ones only acknowledge (rule 6 is for a session's first word).
            slot.sync(session)
        async with slot.lock:
            balance = await self._loaded(peer, slot)
            try:
                after = balance.serve(price, self.terms)
            except BalanceError as exc:
                log.info("refused %s: %s", peer.hex()[:12], exc)
                raise RequestRefused(exc.code, str(exc)[:256]) from None  # type: ignore[arg-type]
            version = self._step(slot, after)
        await self._durable(peer, slot, version)

    # -- requester: rule 2 -------------------------------------------------------

    async def request(self, session: Session, reserve: int, send: Callable[[], Awaitable[T]],
                      price_of: Callable[[T], int], *, can_pay: bool = True) -> T:
        """Send one request without payment, record what it was worth and acknowledge it.

        ``reserve`` is the request's expected price: at most ``in_flight_limit``
        less ``ack_every`` of them are outstanding (sent and not yet
        acknowledged; ``take`` may leave that much of its acknowledgements to
        a later one), so a server applying the same limit never refuses
        WINDOW_FULL for long.
        ``price_of`` prices the answer (a GET by the bytes it got).
        ``can_pay`` False (no channel to the peer): while a payment is due
        (rule 3) the request is not sent, so that the caller opens a channel
        first and then sends it, once (§Service balance, "Balance mode").

        Raises:
            RemotePaymentError(INSUFFICIENT_PAYMENT): ``can_pay`` is False and we
                owe the payment threshold (``owed``); nothing was sent.
            RequestError: the server refused (DISCONNECT_THRESHOLD: we owe it too much).
            node.transport errors: the session failed; nothing is recorded.
        """
        peer = session.peer_node_id
        slot = self._slot(peer)
        if not can_pay:
            async with slot.lock:
                owed = -(await self._loaded(peer, slot)).net
            if owed >= self.terms.payment_threshold:
                raise RemotePaymentError(PaymentErrorCode.INSUFFICIENT_PAYMENT,
                                         "a balance payment is due and no channel is open", owed=owed)
        while slot.outstanding > 0 and slot.outstanding + reserve > self.terms.in_flight_limit - self.ack_every:
            await slot.room.wait()
        slot.outstanding += reserve
        try:
            for attempt in range(WINDOW_FULL_RETRIES + 1):
                try:
                    answer = await send()
                    break
                except RequestError as exc:
                    if exc.code != BalanceErrorCode.WINDOW_FULL or attempt == WINDOW_FULL_RETRIES:
                        raise
            await self.take(session, price_of(answer))
            return answer
        finally:
            slot.outstanding -= reserve
            room, slot.room = slot.room, trio.Event()
            room.set()

    async def take(self, session: Session, price: int) -> None:
        """Record service of ``price`` received from ``session``'s peer, then acknowledge it (rule 2).

        While other answers of the peer are being recorded, the acknowledgement
        is left to the last of them unless ``ack_every`` sats of service went
        unacknowledged: cumulative, one covers them all, and each costs a
        signature here and a verification there.
        """
        await self._receive(session, lambda balance: balance.take(price), batch=True)

    async def _receive(self, session: Session, step: Callable[[PeerBalance], PeerBalance], *,
                       batch: bool = False) -> None:
        """Take a receiving ``step`` (service or a payment), record it, then acknowledge (rules 2 and 4)."""
        peer = session.peer_node_id
        slot = self._slot(peer)
        slot.receiving += 1
        try:
            async with slot.lock:
                version = self._step(slot, step(await self._loaded(peer, slot)))
            await self._durable(peer, slot, version)
        finally:
            slot.receiving -= 1
        sent = slot.last_sent[1] if slot.last_sent is not None and slot.last_sent[0] is session else -1
        durable = slot.durable if slot.durable is not None else PeerBalance()
        if batch and slot.receiving > 0 and 0 <= durable.taken - sent < self.ack_every:
            return  # a take still under way acknowledges this one with its own
        await self._send_ack(session, slot, unless_sent=True)

    # -- acknowledgements: rules 5 and 6 -----------------------------------------

    async def greet(self, session: Session) -> None:
        """Send our acknowledgement first on a new session with a peer in balance mode (rule 6); once per session."""
        if session in self._greeted or not self.active(session):
            return
        _remember(self._greeted, session, None)
        slot = self._slot(session.peer_node_id)
        async with slot.lock:
            await self._loaded(session.peer_node_id, slot)
        await self._send_ack(session, slot)

    async def received(self, session: Session, fields: object) -> object:
        """Take in the peer's BALANCE_ACK (rule 5; the session's first resynchronises, rule 6).

        Returns the payment it carries (None: none), for the caller to
        charge through the channel and then report with ``paid``.

        Raises:
            BalanceError(BAD_BALANCE_ACK): malformed, not the session peer's,
            badly signed, above what we gave or paid or below an earlier one;
            nothing changes (the caller drops the session).
        """
        peer = session.peer_node_id
        ack, payment = BalanceAck.from_wire(fields)
        if ack.signer != peer or ack.peer != self.identity.node_id:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_ACK, "acknowledgement of another pair of nodes")
        if not ack.verify(session.peer_hello.identity_key):
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_ACK, "acknowledgement signature does not verify")
        slot = self._slot(peer)
        first = session not in slot.synced
        async with slot.lock:
            balance = await self._loaded(peer, slot)
            # With another session to the peer open, service may be in flight on it: only a
            # session alone with the peer starts from the peer's acknowledgement (nothing in flight).
            alone = not any(other is not session and other.is_open for other in slot.synced)
            if first and alone:
                self._step(slot, balance.resync(ack), durable=False)  # acks may be written lazily ("State")
            elif not (ack.service_received <= balance.acked_given and ack.payment_received <= balance.acked_paid_out):
                self._step(slot, balance.acknowledge(ack), durable=False)
            # Else it is stale: sent before one already taken in, and overtaken on the way (our handlers
            # run a session's messages concurrently).  Cumulative, it says nothing new (§Service balance).
        slot.sync(session)
        acked, self.acked = self.acked, trio.Event()
        acked.set()
        if first:
            await self.greet(session)
        return payment

    async def paid(self, session: Session, amount: int) -> None:
        """Record ``amount`` sats the peer paid us through its channel (on disk already), then acknowledge (rule 4)."""
        if amount:
            await self._receive(session, lambda balance: balance.receive_payment(amount))

    # -- payer: rule 3 -----------------------------------------------------------

    async def due(self, peer: bytes) -> int:
        """What we owe ``peer`` and must pay now (rule 3), 0 while below the payment threshold."""
        slot = self._slot(peer)
        async with slot.lock:
            return (await self._loaded(peer, slot)).payment_due(self.terms)

    async def settle(self, link: HostLink) -> int:
        """Pay the host what we owe it once that reaches the payment threshold (rule 3); the sats paid.

        The payment goes with our acknowledgement (BALANCE_ACK ``payment``),
        once ``paid_out`` and our payment record are on disk; the host's
        acknowledgement of it allows the next.  When either record fails the
        payment never leaves and is withdrawn from the link and the balance,
        so the next one pays exactly what is owed then, not this one again
        on top (0 is returned; the error is logged).

        Without a channel nothing is paid and nothing fails: the request that
        made the payment due was served (a caller that opened a channel and
        sent it again would be served it twice); the next request asks for
        the channel before it is sent (``request``, ``can_pay``).

        Raises:
            PaymentError(TOTAL_OVER_CAPACITY): the channel cannot carry it.
        """
        peer = link.host
        slot = self._slot(peer)
        if link.channel is None:
            return 0
        async with link.turn:  # no paid request of the link signs meanwhile
            async with slot.lock:
                balance = await self._loaded(peer, slot)
                due = balance.payment_due(self.terms)
                if due == 0:
                    return 0
                before = link.machine.totals()
                payment = link.machine.settle_balance(due)
                if payment is None:  # a payment lost in a crash was signed above it: wait until we owe that
                    return 0
                version = self._step(slot, balance.pay(due))
            record = None
            try:
                # Shielded: a cancelled caller must not leave one record written and its payment unsent.
                with trio.CancelScope(shield=True):
                    await self._durable(peer, slot, version)
                    if payment.total > before.channel_total:  # else re-sent: its record is on disk already
                        record = link.journal.add(PaymentEntry(
                            peer=peer.hex(), direction=Direction.OUT, kind=Kind.SETTLE,
                            chunk=settle_id(payment.total).hex(), price=0, amount=due, channel_id=str(payment.channel),
                            total=payment.total, payer_sig=payment.sig))
                        await link.journal.written(record)
            except (LedgerError, sqlite3.Error) as exc:
                await self._withdraw(link, slot, before, due, record)
                log.warning("not paying %s the %d sats we owe it now: recording the payment failed (%s); the "
                            "next answer pays what we owe then", peer.hex()[:12], due, exc)
                return 0
        await self._send_ack(link.session, slot, payment.to_wire())
        log.info("paid %s the %d sats we owed it (channel %s, total %d)", peer.hex()[:12], due, payment.channel,
                 payment.total)
        return due

    async def _withdraw(self, link: HostLink, slot: _Peer, before: LinkTotals, due: int,
                        record: PendingRecord | None) -> None:
        """Take back a payment of ``due`` whose records failed: it never left (rule 3).

        The link signs the next payment from ``before``.  A failed balance
        write left the view to reload from the ledger (without it); after a
        failed payment record ``paid_out`` is on disk with it, so the view in
        memory drops it and the next write of the view puts that right (a
        crash first: the next session's resynchronisation takes it back).
        """
        link.machine.withdraw(before)
        if record is not None:
            link.journal.withdraw(record)
        async with slot.lock:
            view = slot.balance
            if view is not None and view.paid_out - view.acked_paid_out >= due:
                self._step(slot, view.withdraw_payment(due), durable=False)

    # -- internals ---------------------------------------------------------------

    def _slot(self, peer: bytes) -> _Peer:
        slot = self._peers.get(peer)
        if slot is None:
            if len(self._peers) >= MAX_CACHED_BALANCES:
                # Drop idle views (they reload from the ledger), never one with work under way.
                for key in [k for k, v in self._peers.items() if v.idle()][: MAX_CACHED_BALANCES // 2]:
                    del self._peers[key]
            slot = self._peers[peer] = _Peer()
        return slot

    async def _loaded(self, peer: bytes, slot: _Peer) -> PeerBalance:
        """The peer's view in memory, read from the ledger first if needed (hold ``slot.lock``)."""
        if slot.balance is None:
            stored, settled = await trio.to_thread.run_sync(self._stored, peer.hex())
            if settled > stored.paid_in:
                # Charged through the channel and not yet counted when we stopped
                # (two records): counted now, before anything is acknowledged.
                stored = stored.receive_payment(settled - stored.paid_in)
                slot.version += 1
            slot.balance = stored
            if slot.durable is None:
                slot.durable = stored  # its paid_in is on disk too, in the payment rows
        return slot.balance

    def _stored(self, peer_hex: str) -> tuple[PeerBalance, int]:
        """The peer's recorded view and the sats of its ``settle`` payments recorded (worker thread)."""
        return self.ledger.balance(peer_hex), self.ledger.settled_in(peer_hex)

    @staticmethod
    def _step(slot: _Peer, after: PeerBalance, *, durable: bool = True) -> int:
        """Adopt ``after`` in memory; the version to wait for on disk."""
        slot.balance = after
        slot.version += 1
        return slot.version if durable else slot.written

    async def _durable(self, peer: bytes, slot: _Peer, version: int) -> None:
        """Return once step ``version`` of ``peer``'s view is on disk (writing it if no write is under way).

        Raises:
            the ledger's error when the write carrying ``version`` failed (the
            view then reloads from the ledger: what was not written never was).
        """
        while slot.written < version:
            if version <= slot.failed_upto:
                raise LedgerError("the balance write of this step failed")
            underway = slot.writing
            if underway is not None:
                await underway.done.wait()
                if underway.error is not None and version <= underway.upto:
                    raise underway.error
                continue
            snapshot = slot.balance
            if snapshot is None:
                raise LedgerError("the balance write of this step failed")
            write = slot.writing = _Write(upto=slot.version)
            try:
                await trio.to_thread.run_sync(self.ledger.record_balance, peer.hex(), snapshot)
                slot.written, slot.durable = write.upto, snapshot
            except Exception as exc:  # nothing of it is on disk: forget what was not written
                write.error = exc
                slot.failed_upto, slot.balance = write.upto, None
                raise
            finally:
                slot.writing = None
                write.done.set()

    async def _send_ack(self, session: Session, slot: _Peer, payment: object = None, *,
                        unless_sent: bool = False) -> None:
        """Acknowledge what of the peer's service and payments is on disk (never more), with ``payment`` if any.

        ``unless_sent``: not when the same totals already went on this session
        (steps recorded in one write share one acknowledgement: it is cumulative).
        """
        durable = slot.durable if slot.durable is not None else PeerBalance()
        sent = (session, durable.taken, durable.paid_in)
        if unless_sent and slot.last_sent == sent:
            return
        slot.last_sent = sent
        ack = BalanceAck.sign(self.identity, peer=session.peer_node_id, service_received=durable.taken,
                              payment_received=durable.paid_in)
        await session.notify(ChannelMessage(request_id=0, type=MessageType.BALANCE_ACK,
                                            fields=ack.to_wire(payment)))
        self.acks_sent += 1


async def balanced_request(book: BalanceBook, link: HostLink, kind: Kind, chunk: bytes, size: int,
                           data: Body) -> Paid:
    """One GET, PUT, renewal or charged audit to a host in balance mode: no payment, the balance keeps it.

    What it signed is the balance payment (rule 3) this request made due, if any.

    Priced by the host's terms as the host prices it: a GET by the bytes it
    sent, the others by the size asked (specs/payments.md §Service balance).
    """
    terms = link.terms
    request = Request(kind=kind, chunk=chunk, price=price_of(terms, kind, size))

    def priced(answer: bytes | bool) -> int:
        return price_of(terms, kind, len(answer)) if kind is Kind.GET and isinstance(answer, bytes) else request.price

    answer = await book.request(link.session, request.price, lambda: send_request(link, request, data, None, None),
                                priced, can_pay=link.channel is not None)
    return Paid(answer=answer, signed=await book.settle(link))


def settle_id(total: int) -> bytes:
    """The 32-byte name of a balance payment in the ledgers: its channel total (unique per channel)."""
    return total.to_bytes(32, "big")


def _remember(table: dict[Session, T], session: Session, value: T) -> None:
    """Add ``session`` to a bounded table, dropping closed sessions (then the oldest) past the bound."""
    if len(table) >= MAX_TRACKED_SESSIONS:
        for old in [s for s in table if not s.is_open]:
            del table[old]
        while len(table) >= MAX_TRACKED_SESSIONS:
            del table[next(iter(table))]
    table[session] = value


async def settle_balance(session: Session, message: ChannelMessage, balance: BalanceBook, payee: PayeeBook) -> None:
    """Take in a BALANCE_ACK as its receiver (specs/payments.md §Service balance, rules 4 to 6).

    Its payment, if any, is charged through the channel as kind settle
    (recorded like any payment, so channel closes and paid == earned hold),
    then counted in the balance and acknowledged.  A bad acknowledgement or
    a refused payment drops the session (``BAD_BALANCE_ACK``): the peer's
    next session resynchronises, and takes back a payment never recorded.
    """
    peer = session.peer_node_id
    try:
        payment = await balance.received(session, message.fields)
        if payment is not None:
            total = Payment.from_wire(payment).total
            increment = await payee.charge(peer, kind=Kind.SETTLE, chunk=settle_id(total), size=0, payment=payment)
            await balance.paid(session, increment)
    except (BalanceError, PaymentError) as exc:
        log.warning("dropping the session with %s: %s %s", peer.hex()[:12], exc.code.name, exc)
        session.close()
