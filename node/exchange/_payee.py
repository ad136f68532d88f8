"""The payee (host) side of the paid exchange: channels, accounts, charges.

``PayeeBook`` decides, for each GET or PUT a peer sends, whether it is paid
for, and records the payment durably before the caller may serve
(specs/payments.md §Payment field).  It holds the payee's view of every
open channel (``protocol.bitcoin.channel.PayeeChannel``) and of every
peer's account (``protocol.payments.PeerAccount``), rebuilt from the ledger
after a restart.  Charges of one peer are serialised by a per-peer lock so
its payments are checked and recorded in order; different peers proceed in
parallel and share the ledger's group commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from node.exchange._chain import ChainView
from node.exchange._channels import outpoint_of, params_from_blob, params_to_blob, payment_refusal
from node.ledger import ChannelRecord, Ledger, StaleTotal
from protocol.bitcoin import PrivateKey, PublicKey
from protocol.bitcoin.channel import ChannelParams, PayeeChannel, close_deadline, funding_script_for
from protocol.bitcoin.channel import SignedCommitment
from protocol.bitcoin.errors import BitcoinError
from protocol.payments import REDELIVERY_DEPTH, LocalPaymentError, PaymentErrorCode, PeerAccount, Terms
from protocol.payments.messages import ChannelId, ChannelState, OpenChannel, Payment

# Bound on peers whose account is cached in memory; the ledger holds them all.
MAX_CACHED_ACCOUNTS = 10_000
# A paid request re-reads the tip when the cached one is older than this.
TIP_MAX_AGE_SECONDS = 1.0


@dataclass(slots=True)
class _Peer:
    lock: trio.Lock
    account: PeerAccount | None = None


@dataclass(slots=True)
class PayeeEntry:
    """A payee channel in memory: the Bitcoin-layer state plus who and until when."""

    channel: PayeeChannel
    peer: str
    open: bool
    deadline: int


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
        if await trio.to_thread.run_sync(self.ledger.channel, cid) is not None:
            raise LocalPaymentError(PaymentErrorCode.CHANNEL_EXISTS, f"channel {cid} already exists")
        output = await self.chain.unspent_output(request.channel.txid[::-1].hex(), request.channel.vout)
        if output is None:
            raise LocalPaymentError(PaymentErrorCode.FUNDING_SPENT, f"funding output {cid} is spent or unknown")
        try:
            payer = PublicKey(request.payer_pubkey)
            expected = funding_script_for(payer, self._key.public_key, request.expiry)
        except (BitcoinError, ValueError) as exc:
            raise LocalPaymentError(PaymentErrorCode.FUNDING_MISMATCH, f"unusable channel keys: {exc}") from None
        if output.script_pubkey != expected or output.value != request.capacity:
            raise LocalPaymentError(PaymentErrorCode.FUNDING_MISMATCH, "funding output script or amount is wrong")
        if request.capacity < self.terms.min_capacity:
            raise LocalPaymentError(
                PaymentErrorCode.CAPACITY_TOO_SMALL, f"capacity {request.capacity} < minimum {self.terms.min_capacity}")
        try:
            params = ChannelParams(
                funding_outpoint=outpoint_of(request.channel), capacity=request.capacity, payer=payer,
                payee=self._key.public_key, expiry_height=request.expiry, fee_rate=self.terms.fee_rate)
        except BitcoinError as exc:
            raise LocalPaymentError(PaymentErrorCode.CAPACITY_TOO_SMALL, str(exc)) from None
        if output.confirmations < self.terms.min_confirmations:
            raise LocalPaymentError(
                PaymentErrorCode.FUNDING_UNCONFIRMED,
                f"{output.confirmations} confirmations, {self.terms.min_confirmations} needed")
        tip = await self.chain.tip_height()
        self.set_tip(tip)
        if request.expiry - tip < self.terms.expiry_window:
            raise LocalPaymentError(
                PaymentErrorCode.EXPIRY_TOO_SOON, f"expiry {request.expiry} is under {self.terms.expiry_window} blocks away")
        now = self._clock()
        record = ChannelRecord(
            channel_id=cid, role="payee", peer=peer.hex(), state="open", capacity=request.capacity, total=0,
            payer_sig=None, funding_txid=request.channel.txid[::-1].hex(), funding_vout=request.channel.vout,
            expiry=request.expiry, params=params_to_blob(params), opened_at=now, updated_at=now,
        )
        await trio.to_thread.run_sync(self.ledger.add_channel, record)
        self._channels[cid] = PayeeEntry(PayeeChannel(params, self._key), peer.hex(), True,
                                         close_deadline(request.expiry))
        return await self.channel_state(peer, request.channel)

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
        cid = str(channel)
        entry = self._channels.get(cid)
        if entry is None:
            record = await trio.to_thread.run_sync(self.ledger.channel, cid)
            if record is None or record.role != "payee":
                raise LocalPaymentError(PaymentErrorCode.UNKNOWN_CHANNEL, f"no channel {cid}")
            params = params_from_blob(record.params)
            latest = None
            if record.payer_sig is not None and record.total > 0:
                latest = SignedCommitment(params.channel_id, record.total, record.payer_sig)
            channel_state = await trio.to_thread.run_sync(lambda: PayeeChannel(params, self._key, latest))
            entry = PayeeEntry(channel_state, record.peer, record.state == "open", close_deadline(record.expiry))
            self._channels[cid] = entry
        if peer is not None and entry.peer != peer.hex():
            raise LocalPaymentError(PaymentErrorCode.UNKNOWN_CHANNEL, f"channel {cid} is not this peer's")
        return entry

    def mark_closing(self, channel_id: str) -> None:
        """Stop accepting payments on a channel being closed (the watcher calls this)."""
        entry = self._channels.get(channel_id)
        if entry is not None:
            entry.open = False

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
                lambda: self.ledger.account(peer_hex, "in", recent=REDELIVERY_DEPTH))
            entry.account = PeerAccount(
                consumed=stored.consumed, paid=stored.paid,
                last_chunk=bytes.fromhex(stored.last_chunk) if stored.last_chunk else None, last_kind=stored.last_kind,
                recent=tuple((bytes.fromhex(chunk), kind) for chunk, kind in stored.recent),
            )
        return entry.account

    def price(self, kind: str, size: int) -> int:
        """What a GET or PUT of ``size`` bytes costs under our terms."""
        return self.terms.get_price(size) if kind == "get" else self.terms.put_price(size)

    async def charge(self, peer: bytes, *, kind: str, chunk: bytes, size: int, payment: object) -> int:
        """Charge ``peer`` for one GET or PUT of ``size`` bytes; return the sats paid.

        Returns only once the payment (or the free-allowance use) is on disk,
        so the caller may then serve.  Nothing is recorded when it raises.

        Raises:
            LocalPaymentError: the request is not paid for; ``code`` says why
            (INSUFFICIENT_PAYMENT carries ``owed``).
        """
        return (await self.charge_then(peer, kind=kind, chunk=chunk, size=size, payment=payment))[0]

    async def charge_then(self, peer: bytes, *, kind: str, chunk: bytes, size: int, payment: object,
                          then: Callable[[], object] | None = None) -> tuple[int, object]:
        """``charge``, and run ``then`` in the same worker thread once the record is on disk.

        Returns (sats paid, what ``then`` returned); ``NOT_RUN`` in its place
        when nothing had to be recorded (a redelivery), and the caller runs
        it.  One thread hop per paid request instead of two.
        """
        peer_hex = peer.hex()
        slot = self._peer(peer_hex)
        async with slot.lock:
            account = await self._account(peer_hex)
            if account.is_redelivery(chunk, kind):
                return 0, NOT_RUN  # specs/payments.md §Accounting, redelivery
            price = self.price(kind, size)
            allowance = self.terms.free_allowance
            owed = account.owed(price, allowance)
            if payment is None:
                return await self._charge_free(slot, peer_hex, account, chunk=chunk, kind=kind, price=price, then=then)
            parsed = Payment.from_wire(payment)
            entry = await self.entry(parsed.channel, peer=peer)
            if not entry.open or await self._fresh_tip() >= entry.deadline:
                raise LocalPaymentError(PaymentErrorCode.CHANNEL_EXPIRED, f"channel {parsed.channel} is closed or past its deadline")
            previous = entry.channel.latest
            accepted = entry.channel.total
            if parsed.total <= accepted and owed == 0:
                # Covered already (allowance or credit): an older payment of a
                # paid window that arrived after a newer one carries nothing
                # and is not needed; serve as if it were absent
                # (specs/payments.md §Paid window).
                return await self._charge_free(slot, peer_hex, account, chunk=chunk, kind=kind, price=price, then=then)
            if parsed.total == accepted:
                raise LocalPaymentError(PaymentErrorCode.PAYMENT_REPLAY, f"total {parsed.total} was already accepted")
            if parsed.total < accepted:
                raise LocalPaymentError(
                    PaymentErrorCode.PAYMENT_TOTAL_LOWER, f"total {parsed.total} is below accepted {accepted}")
            increment = parsed.total - accepted
            try:
                entry.channel.accept(SignedCommitment(entry.channel.params.channel_id, parsed.total, parsed.sig), owed)
            except BitcoinError as exc:
                raise payment_refusal(exc, owed) from None
            updated = account.charge(chunk=chunk, kind=kind, price=price, increment=increment, allowance=allowance)
            try:
                result = await _durably(lambda: self.ledger.record_payment(
                    peer=peer_hex, direction="in", kind=kind, chunk=chunk.hex(), price=price, amount=increment,
                    channel_id=str(parsed.channel), total=parsed.total, payer_sig=parsed.sig), then)
            except BaseException as exc:
                entry.channel.latest = previous  # not on disk: not accepted
                if isinstance(exc, StaleTotal):
                    raise LocalPaymentError(PaymentErrorCode.PAYMENT_REPLAY, str(exc)) from None
                raise
            slot.account = updated
            return increment, result

    async def _charge_free(self, slot: _Peer, peer_hex: str, account: PeerAccount, *, chunk: bytes, kind: str,
                           price: int, then: Callable[[], object] | None) -> tuple[int, object]:
        """Charge a request carrying no (needed) payment: within the allowance or credit, else refused."""
        updated = account.charge(chunk=chunk, kind=kind, price=price, increment=0, allowance=self.terms.free_allowance)
        result = await _durably(lambda: self.ledger.record_payment(
            peer=peer_hex, direction="in", kind=kind, chunk=chunk.hex(), price=price, amount=0), then)
        slot.account = updated
        return 0, result


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
