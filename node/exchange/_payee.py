"""The payee (host) side of the paid exchange: the I/O around ``protocol.payments.payee``.

``PayeeBook`` gathers the facts for each GET or PUT a peer sends (its
account, the channel its payment names, the tip height), asks
``decide_charge`` what to do, and carries the decision out: it records the
payment durably before the caller may serve (specs/payments.md §Payment
field of GET and PUT).  It holds the payee's view of every open channel
(``PayeeEntry``) and of every peer's account (``PeerAccount``), rebuilt
from the ledger after a restart.  Charges of one peer are serialised by a
per-peer lock so its payments are checked and recorded in order;
different peers proceed in parallel and share the ledger's group commits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from node.exchange._chain import ChainView
from node.exchange._channels import params_from_blob, params_to_blob
from node.ledger import ChannelRecord, Ledger, StaleTotal
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


@dataclass(slots=True)
class _Peer:
    lock: trio.Lock
    account: PeerAccount | None = None


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
        entry = await self.entry(channel, peer=peer)
        account = await self._account(peer.hex())
        return ChannelState(
            channel=channel, total=entry.channel.total, consumed=account.consumed, paid=account.paid,
            last_chunk=account.last_chunk, last_kind=account.last_kind, recent=account.recent,
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
                # Evict idle entries; their accounts reload from the ledger.
                for key in [k for k, v in self._peers.items() if not v.lock.locked()][: MAX_CACHED_ACCOUNTS // 2]:
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

        Returns only once the payment (or the free-allowance use) is on disk,
        so the caller may then serve.  Nothing is recorded when it raises.

        Raises:
            LocalPaymentError: the request is not paid for; ``code`` says why
            (INSUFFICIENT_PAYMENT carries ``owed``).
        """
        return (await self.charge_then(peer, kind=kind, chunk=chunk, size=size, payment=payment))[0]

    async def charge_then(self, peer: bytes, *, kind: Kind, chunk: bytes, size: int, payment: object,
                          then: Callable[[], object] | None = None) -> tuple[int, object]:
        """``charge``, and run ``then`` in the same worker thread once the record is on disk.

        Returns (sats paid, what ``then`` returned); ``NOT_RUN`` in its place
        when nothing had to be recorded (a redelivery), and the caller runs
        it.  One thread hop per paid request instead of two.
        """
        peer_hex = peer.hex()
        slot = self._peer(peer_hex)
        request = ChargeRequest(kind=kind, chunk=chunk, size=size, payment=payment)
        async with slot.lock:
            account = await self._account(peer_hex)
            decision = decide_charge(request, terms=self.terms, account=account)
            if isinstance(decision, LookUpChannel):
                entry = await self._find(decision.channel, peer_hex)
                if entry is None:
                    decision = decide_charge(request, terms=self.terms, account=account, channel=MissingChannel())
                else:
                    decision = decide_charge(request, terms=self.terms, account=account, channel=entry,
                                             tip_height=await self._fresh_tip(),
                                             settle_threshold=self.settle_threshold)
            return await self._carry_out(slot, peer_hex, request, decision, then)

    async def _carry_out(self, slot: _Peer, peer_hex: str, request: ChargeRequest, decision: ChargeDecision,
                         then: Callable[[], object] | None) -> tuple[int, object]:
        """Record what ``decision`` says, then adopt its account and channel state (only once on disk)."""
        if isinstance(decision, Redeliver):
            return 0, NOT_RUN  # specs/payments.md §Accounting, redelivery
        if isinstance(decision, Refuse):
            raise decision.error()
        if isinstance(decision, ChargeCovered):
            result = await _durably(lambda: self.ledger.record_payment(
                peer=peer_hex, direction=Direction.IN, kind=request.kind, chunk=request.chunk.hex(),
                price=decision.price, amount=0), then)
            slot.account = decision.account
            return 0, result
        if isinstance(decision, AcceptPayment):
            payment = decision.payment
            cid = str(payment.channel)
            try:
                result = await _durably(lambda: self.ledger.record_payment(
                    peer=peer_hex, direction=Direction.IN, kind=request.kind, chunk=request.chunk.hex(),
                    price=decision.price, amount=decision.increment, channel_id=cid, total=payment.total,
                    payer_sig=payment.sig), then)
            except StaleTotal as exc:  # the ledger's own replay check (specs/payments.md §Ledger)
                raise LocalPaymentError(PaymentErrorCode.PAYMENT_REPLAY, str(exc)) from None
            current = self._channels[cid]  # as it is now: the watcher may have marked it closing meanwhile
            self._channels[cid] = dataclasses.replace(current, channel=decision.channel)
            slot.account = decision.account
            if self.settle_threshold is not None and decision.channel.total >= self.settle_threshold:
                self.settle_due.set()  # the last payment it takes: close it now, not at the next poll
            return decision.increment, result
        raise AssertionError(f"decision {decision!r} needs a channel looked up")


# ``charge_then``'s result when ``then`` did not run.
NOT_RUN = object()


async def _durably(record: Callable[[], object], then: Callable[[], object] | None) -> object:
    """Run ``record`` (a ledger write) in a worker thread, then ``then`` in the same one.

    ``then`` runs only after the record is on disk; an exception of it is
    returned, not raised (the payment stands).
    """
    def both() -> object:
        record()
        if then is None:
            return NOT_RUN
        try:
            return then()
        except Exception as exc:
            return exc

    return await trio.to_thread.run_sync(both)
