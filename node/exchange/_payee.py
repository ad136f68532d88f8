"""The payee (host) side of the paid exchange: the I/O around ``protocol.payments.payee``.

``PayeeBook`` gathers the facts for each GET or PUT a peer sends (its
account, the channel its payment names, the tip height), asks
``decide_charge`` what to do, and carries the decision out: it adopts the
state the decision leaves and queues its record (``stage``), and the
caller serves only once the record is on disk (``committed``,
specs/payments.md §Payment field of GET and PUT).  It holds the payee's
view of every open channel (``PayeeEntry``) and of every peer's account
(``PeerAccount``), rebuilt from the ledger after a restart.  Charges of one
peer are decided in order under a per-peer lock, each on the state the one
before it left, without waiting for that one's record: the records of
every peer decided meanwhile go to disk together, one transaction per
group (``ChargeJournal``; specs/payments.md §Ledger, "Grouped host
commits").
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import trio

from node.exchange._chain import ChainView
from node.exchange._channels import params_from_blob, params_to_blob
from node.ledger import ChannelRecord, Ledger, LedgerError, PaymentEntry, StaleTotal
from protocol.bitcoin import PrivateKey
from protocol.bitcoin.channel import PayeeChannel, close_deadline
from protocol.bitcoin.channel import SignedCommitment
from protocol.payments import REDELIVERY_DEPTH, LocalPaymentError, PaymentErrorCode, PeerAccount, Terms
from protocol.payments.messages import ChannelId, ChannelState, OpenChannel
from protocol.payments.payee import (
    AcceptChannel,
    AcceptPayment,
    ChargeCovered,
    ChargeDecision,
    ChargeRequest,
    LookUpChannel,
    MissingChannel,
    PayeeEntry,
    Redeliver,
    Refuse,
    decide_charge,
    decide_open,
    price_of,
)
from protocol.payments.vocabulary import ChannelStatus, Direction, Kind, Role

# Bound on peers whose account is cached in memory; the ledger holds them all.
MAX_CACHED_ACCOUNTS = 10_000
# A paid request re-reads the tip when the cached one is older than this.
TIP_MAX_AGE_SECONDS = 1.0
# Longest a group of records waits for requests already arrived and still
# being read to join it (specs/payments.md §Ledger, "Grouped host commits").
GROUP_WAIT_SECONDS = 0.002


@dataclass(slots=True)
class _Peer:
    lock: trio.Lock
    account: PeerAccount | None = None
    pending: int = 0  # records decided and not yet committed (they hold the account ahead of the ledger)


class PayeeBook:
    """Payee-side bookkeeping of a node.  All methods are trio-async."""

    def __init__(self, *, ledger: Ledger, terms: Terms, payee_key: PrivateKey, chain: ChainView,
                 clock: Callable[[], float] = time.time) -> None:
        if payee_key.public_key.data != terms.payment_pubkey:
            raise ValueError("payee key does not match the terms' payment pubkey")
        self.ledger = ledger
        self.terms = terms
        self.chain = chain
        self._key = payee_key
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self._channels: dict[str, PayeeEntry] = {}
        self.journal = ChargeJournal(ledger, clock=clock, on_failure=self._forget)
        self._generation = 0  # bumped when a failed group resets the state above to the ledger's
        # Latest tip height, refreshed by the settlement watcher, at open and
        # when older than TIP_MAX_AGE_SECONDS: not one RPC per chunk.
        self.tip_height = 0
        self._tip_at = -TIP_MAX_AGE_SECONDS
        # Set by the settlement watcher: a channel whose total reaches it
        # takes no more payments, and ``settle_due`` wakes the watcher to
        # close it at once (specs/payments.md §Settlement).
        self.settle_threshold: int | None = None
        self.settle_due = trio.Event()

    def set_tip(self, height: int) -> None:
        """Record the chain tip seen by someone else (the watcher)."""
        self.tip_height = height
        self._tip_at = trio.current_time()

    async def _fresh_tip(self) -> int:
        if trio.current_time() - self._tip_at > TIP_MAX_AGE_SECONDS:
            self.set_tip(await self.chain.tip_height())
        return self.tip_height

    # -- channels --------------------------------------------------------------

    async def open_channel(self, peer: bytes, request: OpenChannel) -> ChannelState:
        """Check a payer's funding output on chain and persist the channel.

        Raises:
            LocalPaymentError: CHANNEL_EXISTS, FUNDING_SPENT, FUNDING_MISMATCH,
            CAPACITY_TOO_SMALL, FUNDING_UNCONFIRMED or EXPIRY_TOO_SOON, in
            that order of checking (specs/payments.md §Channel messages).
        """
        cid = str(request.channel)
        exists = await trio.to_thread.run_sync(self.ledger.channel, cid) is not None
        funding = await self.chain.unspent_output(request.channel.txid[::-1].hex(), request.channel.vout)
        tip = await self.chain.tip_height()
        self.set_tip(tip)
        decision = decide_open(request, terms=self.terms, payee=self._key.public_key, exists=exists,
                               funding=funding, tip_height=tip)
        if isinstance(decision, Refuse):
            raise decision.error()
        await self._add_channel(peer.hex(), request, decision)
        return await self.channel_state(peer, request.channel)

    async def _add_channel(self, peer_hex: str, request: OpenChannel, accepted: AcceptChannel) -> None:
        now = self._clock()
        cid = str(request.channel)
        record = ChannelRecord(
            channel_id=cid, role=Role.PAYEE, peer=peer_hex, state=ChannelStatus.OPEN, capacity=request.capacity,
            total=0, payer_sig=None, funding_txid=request.channel.txid[::-1].hex(), funding_vout=request.channel.vout,
            expiry=request.expiry, params=params_to_blob(accepted.params), opened_at=now, updated_at=now,
        )
        await trio.to_thread.run_sync(self.ledger.add_channel, record)
        self._channels[cid] = PayeeEntry(channel=PayeeChannel(accepted.params, self._key), peer=peer_hex,
                                         status=ChannelStatus.OPEN, deadline=accepted.deadline)

    async def channel_state(self, peer: bytes, channel: ChannelId) -> ChannelState:
        """What we have recorded for ``channel`` and for ``peer``'s account.

        Raises:
            LocalPaymentError(UNKNOWN_CHANNEL): not a channel of this peer.
        """
        await self.settled()  # what we report is on disk (specs/payments.md §Ledger, "Grouped host commits")
        entry = await self.entry(channel, peer=peer)
        account = await self._account(peer.hex())
        return ChannelState(
            channel=channel, total=entry.channel.total, consumed=account.consumed, paid=account.paid,
            last_chunk=account.last_chunk, last_kind=account.last_kind, recent=account.recent,
            sig=None if entry.channel.latest is None else entry.channel.latest.signature,
        )

    async def entry(self, channel: ChannelId, *, peer: bytes | None = None) -> PayeeEntry:
        """The in-memory state of a payee channel, loaded from the ledger if needed.

        Raises:
            LocalPaymentError(UNKNOWN_CHANNEL): no such payee channel (of ``peer``).
        """
        found = await self._find(channel, None if peer is None else peer.hex())
        if found is None:
            raise LocalPaymentError(PaymentErrorCode.UNKNOWN_CHANNEL, f"no channel {channel} of this peer")
        return found

    async def _find(self, channel: ChannelId, peer_hex: str | None) -> PayeeEntry | None:
        """``entry``, or None when there is no such payee channel (of ``peer_hex``)."""
        cid = str(channel)
        entry = self._channels.get(cid)
        if entry is None:
            loaded = await trio.to_thread.run_sync(self._load_entry, cid)
            if loaded is None:
                return None
            # Another task may have loaded (and since updated) it meanwhile: keep that one.
            entry = self._channels.setdefault(cid, loaded)
        if peer_hex is not None and entry.peer != peer_hex:
            return None
        return entry

    def _load_entry(self, cid: str) -> PayeeEntry | None:
        """A payee channel rebuilt from its ledger row (worker thread: the signature check is CPU)."""
        record = self.ledger.channel(cid)
        if record is None or record.role != Role.PAYEE:
            return None
        params = params_from_blob(record.params)
        latest = None
        if record.payer_sig is not None and record.total > 0:
            latest = SignedCommitment(params.channel_id, record.total, record.payer_sig)
        return PayeeEntry(channel=PayeeChannel(params, self._key, latest), peer=record.peer,
                          status=ChannelStatus(record.state),
                          deadline=close_deadline(record.expiry))

    def mark_closing(self, channel_id: str) -> None:
        """Stop accepting payments on a channel being closed (the watcher calls this)."""
        entry = self._channels.get(channel_id)
        if entry is not None:
            self._channels[channel_id] = dataclasses.replace(entry, status=ChannelStatus.CLOSING)

    # -- charges ---------------------------------------------------------------

    def _peer(self, peer_hex: str) -> _Peer:
        entry = self._peers.get(peer_hex)
        if entry is None:
            if len(self._peers) >= MAX_CACHED_ACCOUNTS:
                # Evict idle entries; their accounts reload from the ledger.  Not
                # one with records still uncommitted: the ledger lags its account.
                idle = [k for k, v in self._peers.items() if not v.lock.locked() and v.pending == 0]
                for key in idle[: MAX_CACHED_ACCOUNTS // 2]:
                    del self._peers[key]
            entry = self._peers[peer_hex] = _Peer(lock=trio.Lock())
        return entry

    async def _account(self, peer_hex: str) -> PeerAccount:
        entry = self._peer(peer_hex)
        if entry.account is None:
            stored = await trio.to_thread.run_sync(
                lambda: self.ledger.account(peer_hex, Direction.IN, recent=REDELIVERY_DEPTH))
            entry.account = PeerAccount(
                consumed=stored.consumed, paid=stored.paid,
                last_chunk=bytes.fromhex(stored.last_chunk) if stored.last_chunk else None, last_kind=stored.last_kind,
                recent=tuple((bytes.fromhex(chunk), kind) for chunk, kind in stored.recent),
            )
        return entry.account

    def price(self, kind: Kind, size: int) -> int:
        """What a GET or PUT of ``size`` bytes costs under our terms."""
        return price_of(self.terms, kind, size)

    async def charge(self, peer: bytes, *, kind: Kind, chunk: bytes, size: int, payment: object) -> int:
        """Charge ``peer`` for one GET or PUT of ``size`` bytes; return the sats paid.

        ``stage`` then ``committed``: returns only once the payment (or the
        free-allowance use) is on disk, so the caller may then serve.
        Nothing is recorded when it raises.

        Raises:
            LocalPaymentError: the request is not paid for; ``code`` says why
            (INSUFFICIENT_PAYMENT carries ``owed``).
        """
        return await self.committed(await self.stage(peer, kind=kind, chunk=chunk, size=size, payment=payment))

    async def stage(self, peer: bytes, *, kind: Kind, chunk: bytes, size: int, payment: object,
                    confirm: Callable[[], None] | None = None) -> StagedCharge:
        """Decide one GET or PUT of ``peer`` and queue its record; do not wait for the record.

        The peer's next request is decided on the account and channel this
        one leaves (specs/payments.md §Ledger, "Grouped host commits"): call
        it in the peer's arrival order, and serve only once ``committed``
        has returned.  ``confirm`` runs once the decision is to serve,
        before anything is adopted: work a refusal need not pay for (the
        chunk's hash check), whose exception refuses the request instead.

        Raises:
            LocalPaymentError: the request is refused (nothing is queued).
            whatever ``confirm`` raised (nothing is queued).
        """
        peer_hex = peer.hex()
        slot = self._peer(peer_hex)
        request = ChargeRequest(kind=kind, chunk=chunk, size=size, payment=payment)
        async with slot.lock:
            while True:
                generation = self._generation
                decision = await self._decide(peer_hex, request)
                if generation == self._generation:
                    break  # else a failed group reset our state while we looked: decide again on the ledger's
            if confirm is not None and not isinstance(decision, Refuse):
                confirm()
            return self._adopt(slot, peer_hex, request, decision)

    async def _decide(self, peer_hex: str, request: ChargeRequest) -> ChargeDecision:
        account = await self._account(peer_hex)
        decision = decide_charge(request, terms=self.terms, account=account)
        if isinstance(decision, LookUpChannel):
            request = dataclasses.replace(request, payment=decision.payment)  # parsed once
            entry = await self._find(decision.channel, peer_hex)
            if entry is None:
                return decide_charge(request, terms=self.terms, account=account, channel=MissingChannel())
            tip = await self._fresh_tip()
            decision = decide_charge(request, terms=self.terms, account=account, channel=entry, tip_height=tip,
                                     settle_threshold=self.settle_threshold)
        return decision

    def _adopt(self, slot: _Peer, peer_hex: str, request: ChargeRequest, decision: ChargeDecision) -> StagedCharge:
        """Adopt what ``decision`` leaves (the next decision builds on it) and queue its record."""
        if isinstance(decision, Redeliver):
            return StagedCharge(increment=0, record=None, settles=False)  # specs/payments.md §Accounting, redelivery
        if isinstance(decision, Refuse):
            raise decision.error()
        if isinstance(decision, ChargeCovered):
            slot.account = decision.account
            record = self.journal.add(slot, PaymentEntry(
                peer=peer_hex, direction=Direction.IN, kind=request.kind, chunk=request.chunk.hex(),
                price=decision.price, amount=0))
            return StagedCharge(increment=0, record=record, settles=False)
        if isinstance(decision, AcceptPayment):
            payment = decision.payment
            cid = str(payment.channel)
            current = self._channels[cid]  # as it is now: the watcher may have marked it closing meanwhile
            self._channels[cid] = PayeeEntry(channel=decision.channel, peer=current.peer, status=current.status,
                                             deadline=current.deadline)
            slot.account = decision.account
            record = self.journal.add(slot, PaymentEntry(
                peer=peer_hex, direction=Direction.IN, kind=request.kind, chunk=request.chunk.hex(),
                price=decision.price, amount=decision.increment, channel_id=cid, total=payment.total,
                payer_sig=payment.sig))
            settles = self.settle_threshold is not None and decision.channel.total >= self.settle_threshold
            return StagedCharge(increment=decision.increment, record=record, settles=settles)
        raise AssertionError(f"decision {decision!r} needs a channel looked up")

    def coming(self) -> contextlib.AbstractContextManager[None]:
        """Wrap a request's work before ``stage`` (its chunk read): the group being formed waits for it."""
        return self.journal.coming()

    async def settled(self) -> None:
        """Return once every record queued so far has committed or failed (a failure resets the state)."""
        await self.journal.settled()

    async def committed(self, staged: StagedCharge) -> int:
        """Wait until ``staged``'s record is on disk (writing its group if none is under way); the sats paid.

        Raises:
            LocalPaymentError(PAYMENT_REPLAY): the ledger refused the total
            as not above its own (specs/payments.md §Ledger).
            LedgerError, sqlite3.Error: the record failed, or one before it
            of the same peer in its group did; nothing of it is on disk.
        """
        if staged.record is not None:
            try:
                await self.journal.committed(staged.record)
            except StaleTotal as exc:  # the ledger's own replay check (specs/payments.md §Ledger)
                raise LocalPaymentError(PaymentErrorCode.PAYMENT_REPLAY, str(exc)) from None
        if staged.settles:
            self.settle_due.set()  # the last payment it takes: close it now, not at the next poll
        return staged.increment

    def _forget(self) -> None:
        """After a failed group: every peer's account and open channel go back to the ledger's.

        The records of the group that failed, and every record queued behind
        them, were decided on state that is not on disk (specs/payments.md
        §Ledger, "Grouped host commits"); they all fail, so none is pending.
        """
        self._generation += 1
        for slot in self._peers.values():
            slot.account = None
        self._channels = {cid: e for cid, e in self._channels.items() if e.status is not ChannelStatus.OPEN}


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedCharge:
    """A charge decided and adopted, its record queued (None: a redelivery, nothing to record)."""

    increment: int
    record: PendingCharge | None
    settles: bool  # its channel reached the settle threshold: wake the watcher once it is on disk


class PendingCharge:
    """One payee record waiting for its group to commit."""

    __slots__ = ("done", "error", "owner")

    def __init__(self, owner: _Peer) -> None:
        self.done = trio.Event()
        self.error: Exception | None = None
        self.owner = owner


class ChargeJournal:
    """The payee's records, written in decision order, in groups (specs/payments.md §Ledger).

    Every record decided while a group is being written goes in the next
    group: one transaction, one device flush, whatever the number of
    requests and peers in it.  The first request to wait for its record
    when no write is under way writes the group (one thread hop for all).
    While requests that have arrived are still being read (``coming``), the
    group waits for them to be decided, at most ``GROUP_WAIT_SECONDS``: a
    window's records then share one commit instead of one each.
    A record that fails fails the later ones of its peer in the same group
    (``Ledger.record_payments(chained=True)``) and every record queued
    behind the group; ``on_failure`` then resets the book's state to the
    ledger's.
    """

    def __init__(self, ledger: Ledger, *, clock: Callable[[], float], on_failure: Callable[[], None]) -> None:
        self.ledger = ledger
        self._clock = clock
        self._on_failure = on_failure
        self._queue: list[tuple[PaymentEntry, PendingCharge]] = []
        self._writing: trio.Event | None = None
        self._coming = 0  # requests arrived and not yet decided (``coming``)
        self._came = trio.Event()  # set (and replaced) when one of them is decided or ends
        self.groups = 0  # groups written (for tests and benchmarks)

    @contextlib.contextmanager
    def coming(self) -> Iterator[None]:
        """Around a request's work before its decision (a chunk read): a group being formed waits for it."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            came, self._came = self._came, trio.Event()
            came.set()

    async def settled(self) -> None:
        """Return once every record queued so far has committed or failed."""
        if self._queue:
            try:
                await self.committed(self._queue[-1][1])  # the last one is written (or fails) after all others
            except Exception:  # its own caller gets the error; here only the end matters
                pass
        elif self._writing is not None:
            await self._writing.wait()

    def add(self, owner: _Peer, entry: PaymentEntry) -> PendingCharge:
        """Queue ``entry`` (decided just now, so after every one queued before)."""
        pending = PendingCharge(owner)
        owner.pending += 1
        self._queue.append((entry, pending))
        return pending

    async def committed(self, mine: PendingCharge) -> None:
        """Return once ``mine`` is on disk: write the queued group, or wait for the write under way.

        Raises:
            the ledger's error for ``mine``, or for a record before it (see the class docstring).
        """
        while not mine.done.is_set():
            if self._writing is not None:
                await self._writing.wait()
                continue
            self._writing = writing = trio.Event()
            batch: list[tuple[PaymentEntry, PendingCharge]] = []
            results: list[object] = []
            try:
                with trio.move_on_after(GROUP_WAIT_SECONDS):
                    while self._coming > 0:  # requests already here join this group
                        await self._came.wait()
                # Cancelled while waiting: nothing taken, the next waiter writes the group.
                batch, self._queue = self._queue, []
                now = self._clock()  # a group's rows share their time: when the group was written
                entries = [entry for entry, _ in batch]
                try:
                    results = list(await trio.to_thread.run_sync(
                        lambda: self.ledger.record_payments(entries, chained=True, now=now)))
                except Exception as exc:  # nothing of the group is on disk
                    results = [exc] * len(batch)
            finally:
                if len(results) != len(batch):
                    results = [RuntimeError("record interrupted")] * len(batch)
                self.groups += 1 if batch else 0
                if any(isinstance(result, Exception) for result in results):
                    behind, self._queue = self._queue, []
                    batch += behind
                    results += [LedgerError("a record before it in its group failed")] * len(behind)
                    self._on_failure()
                for (_, slot), result in zip(batch, results):
                    slot.error = result if isinstance(result, Exception) else None
                    slot.owner.pending -= 1
                    slot.done.set()
                self._writing = None
                writing.set()
        if mine.error is not None:
            raise mine.error
