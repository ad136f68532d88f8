"""The payee's rules for one peer's requests and channels, as pure decisions.

In the manner of h11's ``_state.py``, every rule the host applies to a GET
or PUT lives in one function, ``decide_charge``, and every rule for an
OPEN_CHANNEL in another, ``decide_open``.  The node gathers the facts (the
peer's account, the channel a payment names, the tip height, the funding
output), asks, and carries the decision out: it records and serves, or it
sends the refusal.  Nothing here waits, reads a clock or touches a file;
the signature check calls ``protocol.bitcoin.channel``, which is pure.

``decide_charge`` checks, in this order (specs/payments.md §Payee decision
table, under §Payment field of GET and PUT; §Accounting, §Paid window):

1. a recent charge of the same chunk and kind: ``Redeliver`` (no record);
2. no payment: ``ChargeCovered`` when ``owed`` is 0, else
   INSUFFICIENT_PAYMENT with ``owed``;
3. a malformed payment map: BAD_PAYMENT;
4. the channel not looked up yet: ``LookUpChannel`` (ask again with it and
   with the payment it parsed);
5. no such channel of this peer: UNKNOWN_CHANNEL;
6. not open, the tip at its close deadline, or its total at the settle
   threshold (the watcher is about to close it): CHANNEL_EXPIRED;
7. ``owed`` 0 and a total not above the accepted one: ``ChargeCovered``
   (an overtaken payment of a paid window carries nothing);
8. a total equal to the accepted one: PAYMENT_REPLAY; below it:
   PAYMENT_TOTAL_LOWER;
9. Part 1 §8.2 Payee's checks: above capacity minus fee
   (TOTAL_OVER_CAPACITY), an increment below ``owed``
   (INSUFFICIENT_PAYMENT), a bad signature (BAD_SIGNATURE);
10. else ``AcceptPayment``: record the increment, then serve.

The decisions carry the state after them (the account, the channel); the
node adopts it only once the record is on disk, so a failed write accepts
nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

from protocol.bitcoin import OutPoint, PublicKey
from protocol.bitcoin.channel import ChannelParams, PayeeChannel, close_deadline, funding_script_for
from protocol.bitcoin.channel import SignedCommitment
from protocol.bitcoin.errors import (
    BadSignatureError,
    BeyondCapacityError,
    BitcoinError,
    IncrementBelowOwedError,
    NonIncreasingTotalError,
    WrongChannelError,
)
from protocol.payments.accounting import PeerAccount
from protocol.payments.errors import LocalPaymentError, PaymentErrorCode
from protocol.payments.messages import ChannelId, OpenChannel, Payment
from protocol.payments.terms import Terms
from protocol.payments.vocabulary import ChannelStatus, Kind


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeRequest:
    """A GET or PUT to charge: what, how big, and the ``payment`` map as it came (or None).

    The map is parsed by ``decide_charge`` after the redelivery check, so a
    redelivered request is served whatever payment it carries.  Asked again
    after a ``LookUpChannel``, ``payment`` is the ``Payment`` that decision
    carries: a payment is parsed once per request.
    """

    kind: Kind
    chunk: bytes
    size: int
    payment: object | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))
        if not isinstance(self.chunk, bytes):
            raise TypeError("chunk must be bytes")
        if type(self.size) is not int or self.size < 0:
            raise ValueError("size must be a non-negative int")


@dataclass(frozen=True, slots=True, kw_only=True)
class PayeeEntry:
    """A payee channel: its Bitcoin-layer state, its payer, its status and its close deadline."""

    channel: PayeeChannel
    peer: str  # the payer's node id, hex
    status: ChannelStatus
    deadline: int  # close_deadline(expiry): no payment is accepted from this height


@dataclass(frozen=True, slots=True, kw_only=True)
class MissingChannel:
    """The looked-up channel does not exist, is not a payee channel, or is another peer's."""


# -- decisions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Redeliver:
    """Serve again without a new charge; record nothing (specs/payments.md §Accounting, redelivery)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeCovered:
    """Serve within the free allowance or the peer's credit: record ``price`` with amount 0."""

    price: int
    account: PeerAccount  # the account once the record is on disk


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptPayment:
    """Record the payment (ledger row, channel total and signature), then serve."""

    price: int
    increment: int  # new total minus the accepted one: what the record adds to ``paid``
    payment: Payment
    account: PeerAccount  # the account once the record is on disk
    channel: PayeeChannel  # the channel state once the record is on disk (a new object)


@dataclass(frozen=True, slots=True, kw_only=True)
class LookUpChannel:
    """Ask again with the facts of ``channel`` (``PayeeEntry`` or ``MissingChannel``) and the tip height."""

    channel: ChannelId
    payment: Payment  # parsed: ask again with it as the request's ``payment``


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """Refuse with ERROR ``code``; ``owed`` is set for INSUFFICIENT_PAYMENT."""

    code: PaymentErrorCode
    reason: str
    owed: int | None = None

    def error(self) -> LocalPaymentError:
        """The exception the node raises to send this refusal."""
        return LocalPaymentError(self.code, self.reason, owed=self.owed)


ChargeDecision = Redeliver | ChargeCovered | AcceptPayment | LookUpChannel | Refuse


def price_of(terms: Terms, kind: Kind, size: int) -> int:
    """What a GET, PUT, RENEW or AUDIT of ``size`` bytes costs under ``terms`` (a renewal is a PUT).

    An audit reads and hashes ``size`` bytes of a share, so it is priced as a
    GET of them (specs/erasure.md §7.4 Paid audits): no term of its own.
    """
    if kind is Kind.SETTLE:
        return 0  # pays for service counted in the balance, none of its own (specs/payments.md §Service balance)
    return terms.put_price(size) if kind in (Kind.PUT, Kind.RENEW) else terms.get_price(size)


def decide_charge(request: ChargeRequest, *, terms: Terms, account: PeerAccount,
                  channel: PayeeEntry | MissingChannel | None = None, tip_height: int | None = None,
                  settle_threshold: int | None = None) -> ChargeDecision:
    """What the payee does with ``request`` given ``account`` (the peer's, before it).

    ``channel`` is None until the node has looked up the channel the
    payment names (``LookUpChannel`` asks for it); with a ``PayeeEntry``,
    ``tip_height`` is the current chain tip.  A channel whose total has
    reached ``settle_threshold`` takes no more payments: the payment that
    reached it is the last (specs/payments.md §Settlement).  The checks and
    their order are in this module's docstring.
    """
    if account.is_redelivery(request.chunk, request.kind):
        return Redeliver()
    price = price_of(terms, request.kind, request.size)
    allowance = terms.free_allowance
    owed = account.owed(price, allowance)

    def covered() -> ChargeDecision:
        if owed > 0:
            return Refuse(code=PaymentErrorCode.INSUFFICIENT_PAYMENT, owed=owed,
                          reason=f"request costs {price} sats; {owed} owed past the free allowance, none offered")
        return ChargeCovered(price=price, account=account.charge(
            chunk=request.chunk, kind=request.kind, price=price, increment=0, allowance=allowance))

    if request.payment is None:
        return covered()
    if isinstance(request.payment, Payment):
        payment = request.payment  # parsed when the channel was looked up
    else:
        try:
            payment = Payment.from_wire(request.payment)
        except LocalPaymentError as exc:
            return Refuse(code=exc.code, reason=str(exc))
    if channel is None:
        return LookUpChannel(channel=payment.channel, payment=payment)
    if isinstance(channel, MissingChannel):
        return Refuse(code=PaymentErrorCode.UNKNOWN_CHANNEL, reason=f"no channel {payment.channel} of this peer")
    if tip_height is None:
        raise ValueError("the tip height is needed with the channel")
    settling = settle_threshold is not None and channel.channel.total >= settle_threshold
    if channel.status is not ChannelStatus.OPEN or tip_height >= channel.deadline or settling:
        return Refuse(code=PaymentErrorCode.CHANNEL_EXPIRED,
                      reason=f"channel {payment.channel} is closed or past its deadline")
    accepted = channel.channel.total
    if payment.total <= accepted and owed == 0:
        # Covered already (allowance or credit): an older payment of a paid
        # window that arrived after a newer one carries nothing and is not
        # needed; serve as if it were absent (specs/payments.md §Paid window).
        return covered()
    if payment.total == accepted:
        return Refuse(code=PaymentErrorCode.PAYMENT_REPLAY, reason=f"total {payment.total} was already accepted")
    if payment.total < accepted:
        return Refuse(code=PaymentErrorCode.PAYMENT_TOTAL_LOWER,
                      reason=f"total {payment.total} is below accepted {accepted}")
    trial = copy.copy(channel.channel)  # the entry's own state changes only once the record is on disk
    try:
        trial.accept(SignedCommitment(trial.params.channel_id, payment.total, payment.sig), owed)
    except BitcoinError as exc:
        return payment_refusal(exc, owed)
    increment = payment.total - accepted
    return AcceptPayment(price=price, increment=increment, payment=payment, channel=trial, account=account.charge(
        chunk=request.chunk, kind=request.kind, price=price, increment=increment, allowance=allowance))


def payment_refusal(exc: BitcoinError, owed: int) -> Refuse:
    """The exchange refusal for a Bitcoin-layer payment error (specs/payments.md §Error codes)."""
    if isinstance(exc, IncrementBelowOwedError):
        return Refuse(code=PaymentErrorCode.INSUFFICIENT_PAYMENT, reason=str(exc), owed=owed)
    for kind, code in _BITCOIN_REFUSALS:
        if isinstance(exc, kind):
            return Refuse(code=code, reason=str(exc))
    return Refuse(code=PaymentErrorCode.BAD_PAYMENT, reason=str(exc))  # a malformed payment, among others


_BITCOIN_REFUSALS: tuple[tuple[type[BitcoinError], PaymentErrorCode], ...] = (
    (BadSignatureError, PaymentErrorCode.BAD_SIGNATURE),
    (BeyondCapacityError, PaymentErrorCode.TOTAL_OVER_CAPACITY),
    (NonIncreasingTotalError, PaymentErrorCode.PAYMENT_TOTAL_LOWER),
    (WrongChannelError, PaymentErrorCode.UNKNOWN_CHANNEL),
)


# -- grouped records ---------------------------------------------------------------


class RecordChain:
    """The order rule of the payee's grouped records (specs/payments.md §Ledger, "Grouped host commits").

    The payee decides a peer's next request on the account and channel its
    previous decision left, before that one's record has committed, so the
    records of a group are a chain per peer: each builds on the ones before
    it (its channel total on theirs, its account sums on theirs).  A record
    that fails breaks its peer's chain: every later record of that peer in
    the same group fails too, unwritten, since each was decided on state
    that is not on disk.  Other peers' records go on.  Nothing is served
    before its record commits, so after a crash or a failed write the
    payee has served nothing it has not recorded.
    """

    __slots__ = ("_broken",)

    def __init__(self) -> None:
        self._broken: set[str] = set()

    def may_write(self, peer: str) -> bool:
        """Whether the next record of ``peer`` in this group may be written."""
        return peer not in self._broken

    def failed(self, peer: str) -> None:
        """A record of ``peer`` failed: its later records in this group fail unwritten."""
        self._broken.add(peer)


# -- opening a channel ------------------------------------------------------------


class UnspentOutput(Protocol):
    """A funding output as the chain backend reports it (``gettxout``, mempool included)."""

    @property
    def value(self) -> int: ...

    @property
    def script_pubkey(self) -> bytes: ...

    @property
    def confirmations(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptChannel:
    """Persist the channel (total 0), then answer CHANNEL_ACCEPTED."""

    params: ChannelParams
    deadline: int  # close_deadline(expiry)


def decide_open(request: OpenChannel, *, terms: Terms, payee: PublicKey, exists: bool,
                funding: UnspentOutput | None, tip_height: int) -> AcceptChannel | Refuse:
    """Whether to accept an OPEN_CHANNEL, given what the ledger and the chain say.

    ``exists``: the outpoint is already a channel; ``funding``: the unspent
    output at it, or None.  Checks in the order of specs/payments.md
    §Channel messages: CHANNEL_EXISTS, FUNDING_SPENT, FUNDING_MISMATCH,
    CAPACITY_TOO_SMALL, FUNDING_UNCONFIRMED, EXPIRY_TOO_SOON.
    """
    cid = request.channel
    if exists:
        return Refuse(code=PaymentErrorCode.CHANNEL_EXISTS, reason=f"channel {cid} already exists")
    if funding is None:
        return Refuse(code=PaymentErrorCode.FUNDING_SPENT, reason=f"funding output {cid} is spent or unknown")
    try:
        payer = PublicKey(request.payer_pubkey)
        expected = funding_script_for(payer, payee, request.expiry)
    except (BitcoinError, ValueError) as exc:
        return Refuse(code=PaymentErrorCode.FUNDING_MISMATCH, reason=f"unusable channel keys: {exc}")
    if funding.script_pubkey != expected or funding.value != request.capacity:
        return Refuse(code=PaymentErrorCode.FUNDING_MISMATCH, reason="funding output script or amount is wrong")
    if request.capacity < terms.min_capacity:
        return Refuse(code=PaymentErrorCode.CAPACITY_TOO_SMALL,
                      reason=f"capacity {request.capacity} < minimum {terms.min_capacity}")
    try:
        params = ChannelParams(
            funding_outpoint=OutPoint(cid.txid, cid.vout), capacity=request.capacity, payer=payer, payee=payee,
            expiry_height=request.expiry, fee_rate=terms.fee_rate)
    except BitcoinError as exc:
        return Refuse(code=PaymentErrorCode.CAPACITY_TOO_SMALL, reason=str(exc))
    if funding.confirmations < terms.min_confirmations:
        return Refuse(code=PaymentErrorCode.FUNDING_UNCONFIRMED,
                      reason=f"{funding.confirmations} confirmations, {terms.min_confirmations} needed")
    if request.expiry - tip_height < terms.expiry_window:
        return Refuse(code=PaymentErrorCode.EXPIRY_TOO_SOON,
                      reason=f"expiry {request.expiry} is under {terms.expiry_window} blocks away")
    return AcceptChannel(params=params, deadline=close_deadline(request.expiry))
