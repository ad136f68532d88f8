"""The payer's side of one link, as a pure state machine.

``PayerLink`` is what a fetcher or an uploader knows of one host: its
terms, the payer channel to it, the last total the host acknowledged, the
payer's mirror of the host's account and the paid requests in flight.  The
node feeds it events (a request to send, an answer, a failure, the host's
CHANNEL_STATE, a refusal) and does what it decides (wait, resynchronise,
send this payment, retry with that top-up); it does no I/O and reads no
clock.  Rules: specs/payments.md §Accounting, §Paid window, §After a crash
and §Payer link states.

Every transition of the link is in the ``PayerLink`` methods below, and
summarised here (``W`` is ``paid_window(price, free_allowance)``):

    phase     event                           decision / next phase
    --------  ------------------------------  ----------------------------------------
    READY     admit, in flight < W            SEND
    READY     admit, in flight >= W           WAIT (for a request to settle)
    READY     admit alone, in flight > 0      WAIT (for the window to drain)
    READY     admit alone, drained            SEND_ALONE (a request tried again)
    FAILED    admit, in flight > 0            WAIT (for the window to drain)
    FAILED    admit, drained, channel open    RESYNC (send CHANNEL_STATE, then adopt)
    FAILED    admit, drained, no channel      SEND_ALONE
    FAILED    adopt(state), drained           -> RESYNCED
    RESYNCED  admit                           SEND_ALONE
    ALONE     admit                           WAIT (for the request sent alone)
    any       send(request)                   a Charge; in flight + 1 (SEND_ALONE: -> ALONE)
    any       settle(Answer)                  in flight - 1, the host holds its total (ALONE: -> READY)
    any       settle(Failure)                 in flight - 1; -> FAILED
    any       adopt(state)                    totals and account from the host
    drained   abandon() (channel refused)     no channel; -> FAILED (a new channel: RESYNC first)

A request sent alone goes with nothing else in flight and nothing follows
it until its answer: the host's INSUFFICIENT_PAYMENT figure for it is then
exact and may be paid as is (``PaymentRounds``), and a request after a
failure is never signed on a projection that counts a failed one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from protocol.bitcoin.channel import PayerChannel, SignedCommitment
from protocol.bitcoin.errors import BitcoinError, ChannelExhaustedError
from protocol.payments.accounting import PeerAccount, next_total, paid_window
from protocol.payments.errors import PaymentError, PaymentErrorCode, PriceTooHigh, RemotePaymentError
from protocol.payments.messages import ChannelId, ChannelState, Payment
from protocol.payments.terms import Terms
from protocol.payments.vocabulary import Kind

# Attempts of one request: the first, a top-up after INSUFFICIENT_PAYMENT,
# a resynchronisation after a replayed or lower total (specs/payments.md
# §Payer link states).
MAX_PAYMENT_ROUNDS = 3

# Refusals after which the host takes no more payments on the channel: it
# does not know it, has closed it (or is closing it, or it is past its
# deadline), or its capacity is used up.  The payer gives the channel up and
# opens a new one (specs/payments.md §Error codes, §Channel recovery).
CHANNEL_REFUSALS = frozenset({
    PaymentErrorCode.UNKNOWN_CHANNEL, PaymentErrorCode.CHANNEL_EXPIRED, PaymentErrorCode.FUNDING_SPENT,
    PaymentErrorCode.TOTAL_OVER_CAPACITY,
})
# Channels a payer opens to one host within ``CHANNEL_OPEN_PERIOD`` seconds
# at most, the first one included: a host that keeps refusing new channels
# cannot drain the wallet into fundings (specs/payments.md §Channel recovery).
MAX_CHANNEL_OPENS_PER_PERIOD = 4
CHANNEL_OPEN_PERIOD = 3_600.0
# An open that replaces a channel on which the host acknowledged at least
# this much (or half the channel's largest total, if less) is not counted:
# the payer got that much service for the open, as from a host closing at its
# settle threshold (default 100,000 sats), so a big honest transfer never
# runs out of opens while a host closing early still does
# (specs/payments.md §Channel recovery).
SERVED_CHANNEL_TOTAL = 50_000


def channel_refused(code: int | None) -> bool:
    """Whether an ERROR ``code`` says the host takes no more payments on the channel."""
    return code in CHANNEL_REFUSALS


class Admission(enum.Enum):
    """What a request may do now (``PayerLink.admit``)."""

    SEND = "send"  # room in the window: sign and send it
    WAIT = "wait"  # the window is full or draining after a failure: wait for a request to settle
    RESYNC = "resync"  # a request failed and the window drained: ask the host (CHANNEL_STATE) first
    SEND_ALONE = "send-alone"  # after a failure: sign and send it with nothing else in flight


class Phase(enum.Enum):
    """Where the link is after its last failure (see the module's table)."""

    READY = "ready"
    FAILED = "failed"  # the projection counts a failed request as charged
    RESYNCED = "resynced"  # adopted the host's state since; the next request goes alone
    ALONE = "alone"  # a request sent alone is in flight


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A GET or PUT to pay for: ``price`` by its expected size.

    ``hint`` is the host's figure of what this request owes, from its
    refusal of the same request sent alone; sent alone again, it pays at
    least that.
    ``alone``: it goes with nothing else in flight (a request tried again
    after a refusal: ``PaymentRounds.alone``).
    """

    kind: Kind
    chunk: bytes
    price: int
    hint: int | None = None
    alone: bool = False

    def __post_init__(self) -> None:
        if self.price < 0 or (self.hint is not None and self.hint <= 0):
            raise ValueError("a price is non-negative and a hint positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class Charge:
    """A request signed and counted in flight: send ``payment`` with it.

    ``signed`` is what the payment adds to the channel (0 when nothing new
    is signed: no payment, or one re-sent at the same total); ``new`` says
    the payer has a new payment to record.  ``ahead`` is the total the next
    request will likely owe, worth signing while this one travels.
    """

    request: Request
    redelivery: bool
    alone: bool
    payment: Payment | None
    signed: int
    new: bool
    ahead: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Abandoned:
    """A channel given up (``PayerLink.abandon``).

    ``acknowledged`` is the last total the host confirmed on it: our
    payments above it were refused, never recorded, and are taken back
    from what we spent (specs/payments.md §Channel recovery).
    """

    channel_id: ChannelId
    acknowledged: int
    max_total: int

    @property
    def served(self) -> bool:
        """Whether the host acknowledged enough on the channel for its replacement to be free of the budget.

        At least ``SERVED_CHANNEL_TOTAL``, or half of ``max_total`` if that
        is less (specs/payments.md §Channel recovery).
        """
        return self.acknowledged >= min(SERVED_CHANNEL_TOTAL, self.max_total // 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkTotals:
    """A link's totals before a balance payment (``PayerLink.totals``), put back if it never leaves."""

    channel_total: int
    acknowledged: int
    projected: int
    paid: int
    last_sig: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """The host answered ``charge``; ``size`` is the chunk's real size when the answer carries it."""

    charge: Charge
    size: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """``charge`` failed (refused, lost with its session, or our record of it could not be written).

    ``answered``: the host answered it (an ERROR, or bytes that are not the
    chunk), so whatever it recorded of its payment it recorded before that
    answer; else (given up, lost with its session) the payment may still
    reach the host's ledger later.
    """

    charge: Charge
    answered: bool = False


class PayerLink:
    """The payer's state with one host (see the module docstring's table)."""

    def __init__(self, *, terms: Terms, channel: PayerChannel | None = None, channel_id: ChannelId | None = None,
                 last_sig: bytes | None = None) -> None:
        """Start a link, with the open channel to the host restored from our ledger if there is one.

        ``last_sig`` is our signature of ``channel.total``, re-sent rather
        than paid again if the host never recorded it.
        """
        if (channel is None) != (channel_id is None):
            raise ValueError("a channel comes with its id")
        self.terms = terms
        self.channel = channel
        self.channel_id = channel_id
        self.last_sig = last_sig
        self.acknowledged = channel.total if channel is not None else 0
        # ``account`` and ``projected`` count the requests in flight as
        # charged (specs/payments.md §Paid window).
        self.account = PeerAccount()
        self.projected = self.acknowledged
        self.inflight = 0
        self.phase = Phase.READY
        self.paid = 0  # sats signed over this link's life (for reports and tests)
        # A payment of ours left on this session and got no answer (a request
        # given up, a one-way balance payment): it may still reach the host's
        # ledger, so only the next session's CHANNEL_STATE may take payments
        # back (``may_take_back``).
        self.unanswered = False
        self.taken_back = 0  # sats of ours the host never recorded, taken back (``take_back``) over the link's life
        # The likely next payment, signed while a request was in flight; used
        # only if the next request owes exactly its total (nothing is paid
        # until a payment leaves).
        self._ahead: SignedCommitment | None = None
        # The channel given up last and not replaced yet: a new one's open is
        # weighed against the budget by it (``ChannelOpenBudget``).
        self.replacing: Abandoned | None = None

    @property
    def may_take_back(self) -> bool:
        """Whether the host's CHANNEL_STATE now is final for every payment of ours on this session.

        True when nothing is in flight and every payment that left got an
        answer: the host recorded what it recorded before answering, so a
        total it reports below ours will stay below (specs/payments.md §After
        a crash, "take back").
        """
        return self.inflight == 0 and not self.unanswered

    @property
    def refused_above(self) -> bool:
        """Whether we signed above what the host acknowledged and a request failed since (a resync would show it)."""
        return self.phase is Phase.FAILED and self.channel is not None and self.channel.total > self.acknowledged

    @property
    def dirty(self) -> bool:
        """A request failed and the link has not resynchronised since."""
        return self.phase is Phase.FAILED

    def opened(self, channel: PayerChannel, channel_id: ChannelId) -> None:
        """A new channel to the host was funded: pay through it from its zero total."""
        self.channel, self.channel_id = channel, channel_id
        self.last_sig = self._ahead = self.replacing = None
        self.acknowledged = self.projected = channel.total

    def abandon(self) -> Abandoned:
        """Give up the channel the host refused (``channel_refused``); the window must be drained.

        The link is left FAILED: the next request goes alone without a
        channel, or, once a new one is opened (``opened``), after a
        resynchronisation on it (the host's account of us, which our mirror
        may no longer match).

        Raises:
            RuntimeError: no channel, or requests still in flight (their
            answers may still say the host recorded them).
        """
        if self.channel is None or self.channel_id is None:
            raise RuntimeError("no channel to abandon")
        if self.inflight:
            raise RuntimeError("abandon a channel only once the window has drained")
        abandoned = Abandoned(channel_id=self.channel_id, acknowledged=self.acknowledged,
                              max_total=self.channel.params.max_total)
        self.replacing = abandoned
        self.channel = self.channel_id = None
        self.last_sig = self._ahead = None
        self.acknowledged = self.projected = 0
        self.phase = Phase.FAILED
        return abandoned

    def admit(self, price: int, *, alone: bool = False) -> Admission:
        """What a request of ``price`` may do now (the caller holds the link's turn); ``alone``: it must
        go with nothing else in flight, and waits for the window to drain."""
        if self.phase is Phase.RESYNCED:
            return Admission.SEND_ALONE
        if self.phase is Phase.ALONE:
            return Admission.WAIT
        if self.phase is Phase.READY:
            if alone:
                return Admission.SEND_ALONE if self.inflight == 0 else Admission.WAIT
            window = paid_window(price, self.terms.free_allowance)
            return Admission.SEND if self.inflight < window else Admission.WAIT
        if self.inflight > 0:
            return Admission.WAIT
        return Admission.RESYNC if self.channel_id is not None else Admission.SEND_ALONE

    def send(self, request: Request) -> Charge:
        """Sign what ``request`` owes as if those in flight were charged; count it in flight.

        Raises:
            RuntimeError: ``admit`` did not let the request go.
            RemotePaymentError(INSUFFICIENT_PAYMENT): it owes and no channel is open.
            PaymentError(TOTAL_OVER_CAPACITY): the channel's capacity is used up
            (``channel_refused``: give it up, open a new one).
            protocol.bitcoin.errors.BitcoinError: the channel cannot pay it.
        """
        admission = self.admit(request.price, alone=request.alone)
        if admission not in (Admission.SEND, Admission.SEND_ALONE):
            raise RuntimeError(f"request sent while the link says {admission.value}")
        alone = admission is Admission.SEND_ALONE
        redelivery = self.account.is_redelivery(request.chunk, request.kind)
        owed = 0 if redelivery else self.account.owed(request.price, self.terms.free_allowance)
        if alone and request.hint is not None and not redelivery:
            # The host's figure when it refused this request sent alone: exact then, and the mirror's own
            # (just adopted, at a price no lower than the host's) is no less now.
            owed = max(owed, request.hint)
        before = self.projected
        try:
            payment, signed, new = self._pay(owed)
        except ChannelExhaustedError as exc:  # nothing signed, nothing counted
            raise PaymentError(PaymentErrorCode.TOTAL_OVER_CAPACITY, f"channel used up: {exc}") from None
        increment = 0
        if payment is not None:
            increment = max(0, payment.total - before)
            self.projected = max(before, payment.total)
        if not redelivery:
            self.account = self.account.charge(chunk=request.chunk, kind=request.kind, price=request.price,
                                               increment=increment, allowance=self.terms.free_allowance)
        self.inflight += 1
        if alone:
            self.phase = Phase.ALONE
        ahead = payment.total + request.price if payment is not None and request.price > 0 else None
        return Charge(request=request, redelivery=redelivery, alone=alone, payment=payment, signed=signed, new=new,
                      ahead=ahead)

    def _pay(self, owed: int) -> tuple[Payment | None, int, bool]:
        """The payment for ``owed``, the sats it newly signs, and whether it is new."""
        if owed == 0:
            return None, 0, False
        if self.channel is None or self.channel_id is None:
            raise RemotePaymentError(PaymentErrorCode.INSUFFICIENT_PAYMENT, "payment owed but no channel open", owed=owed)
        channel = self.channel
        total = next_total(owed=owed, acknowledged_total=self.projected, signed_total=channel.total)
        assert total is not None
        if total == channel.total and self.last_sig is not None:
            # Signed before and maybe never recorded by the host: re-sent,
            # never paid again (specs/payments.md §After a crash).
            return Payment(channel=self.channel_id, total=total, sig=self.last_sig), 0, False
        signed = total - channel.total
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.total == total and total > channel.total:
            commitment = channel.adopt(ahead)
        else:
            commitment = channel.pay(signed)
        self.last_sig = commitment.signature
        self.paid += signed
        return Payment(channel=self.channel_id, total=commitment.total, sig=commitment.signature), signed, True

    def take_back(self, total: int) -> None:
        """The host's CHANNEL_STATE recorded ``total``, below what we signed: sign on from it.

        Asked on a new session, or on this one when ``may_take_back``:
        nothing of ours can still reach the host's ledger (over an old
        session, or unanswered on this one), so the payments above ``total``
        never will: the next one signs from
        ``total`` again and is a new payment, recorded as such (its total may
        equal one signed before; the host can close on one of them only).
        At most the one chunk's price those payments were for is at risk,
        as before (specs/payments.md §After a crash).
        """
        if self.channel is None or total >= self.channel.total:
            return
        if self.inflight:
            raise RuntimeError("take_back with requests in flight")
        self.taken_back += self.channel.total - total
        self.channel.total = total
        self.last_sig, self._ahead = None, None
        self.acknowledged = self.projected = total

    def settle_balance(self, amount: int) -> Payment | None:
        """The payment of exactly ``amount`` above the host's acknowledged total: a service balance's imbalance.

        Rule 3 of specs/payments.md §Service balance: the balance, not the
        account mirror, says what is owed, so the increment the host accepts
        is ``amount`` to the sat.  A total we signed before and the host never
        acknowledged (a payment lost in a crash) is never signed below: when
        the new total is that one, its signature is sent again; below it,
        None (nothing is paid until what we owe reaches it).  Only between
        paid requests (none in flight).

        Raises:
            RemotePaymentError(INSUFFICIENT_PAYMENT): no channel open (``owed`` is ``amount``).
            PaymentError(TOTAL_OVER_CAPACITY): the channel cannot carry it; nothing signed.
            ValueError: ``amount`` is not positive, or paid requests are in flight.
        """
        if type(amount) is not int or amount <= 0 or self.inflight:
            raise ValueError("a balance payment is a positive amount, with no paid request in flight")
        if self.channel is None or self.channel_id is None:
            raise RemotePaymentError(PaymentErrorCode.INSUFFICIENT_PAYMENT, "balance owed but no channel open",
                                     owed=amount)
        total = self.acknowledged + amount
        if total < self.channel.total or (total == self.channel.total and self.last_sig is None):
            return None
        if total == self.channel.total:
            signature = self.last_sig
        else:
            try:
                commitment = self.channel.pay(total - self.channel.total)
            except ChannelExhaustedError as exc:
                raise PaymentError(PaymentErrorCode.TOTAL_OVER_CAPACITY, f"channel used up: {exc}") from None
            signature, self._ahead = commitment.signature, None
            self.paid += commitment.total - self.acknowledged
        assert signature is not None
        self.last_sig = signature
        self.acknowledged = self.projected = total
        self.unanswered = True  # one-way: the host never answers it
        return Payment(channel=self.channel_id, total=total, sig=signature)

    def totals(self) -> LinkTotals:
        """What ``settle_balance`` changes, for ``withdraw`` to put back."""
        return LinkTotals(channel_total=self.channel.total if self.channel is not None else 0,
                          acknowledged=self.acknowledged, projected=self.projected, paid=self.paid,
                          last_sig=self.last_sig)

    def withdraw(self, before: LinkTotals) -> None:
        """Forget a balance payment that never left: its records failed before it was sent.

        It was signed in memory only (the host never saw it, our ledger does
        not hold it), so the link goes back to ``before`` and the next
        payment is signed from there, exactly what is owed then
        (specs/payments.md §Service balance, rule 3).

        Raises:
            RuntimeError: no channel, requests in flight, or ``before`` is above our total.
        """
        if self.channel is None or self.inflight or before.channel_total > self.channel.total:
            raise RuntimeError("withdraw a balance payment only right after signing it")
        self.channel.total = before.channel_total
        self.acknowledged, self.projected, self.paid = before.acknowledged, before.projected, before.paid
        self.last_sig, self._ahead = before.last_sig, None

    def sign_ahead(self, total: int) -> None:
        """Sign the payment for ``total`` now, for the next request to use if it owes exactly that."""
        channel = self.channel
        if channel is None or total <= channel.total or total > channel.params.max_total:
            return
        try:
            self._ahead = channel.sign(total)
        except BitcoinError:  # no payment ahead: the next request signs its own
            self._ahead = None

    def settle(self, event: Answer | Failure) -> None:
        """A request in flight finished, either way."""
        charge = event.charge
        request = charge.request
        if self.inflight <= 0:
            raise RuntimeError("settled a request that was not in flight")
        self.inflight -= 1
        if isinstance(event, Answer):
            if charge.payment is not None:  # the host holds it
                self.acknowledged = max(self.acknowledged, charge.payment.total)
            if event.size is not None and not charge.redelivery:
                actual = self.terms.get_price(event.size) if request.kind is Kind.GET else self.terms.put_price(event.size)
                if actual != request.price:  # charged by the real size, as the host does
                    self.account = replace(self.account, consumed=self.account.consumed + actual - request.price)
            if self.phase is Phase.ALONE:
                self.phase = Phase.READY
            return
        self.phase = Phase.FAILED  # the projection counted it charged: resynchronise first
        if charge.payment is not None and not event.answered:
            self.unanswered = True
        if self.channel_id is None and charge.payment is None and not charge.redelivery:
            # No channel to resynchronise from: take back what the projection
            # counted (the host charges nothing it does not serve, and a chunk
            # lost after its charge is redelivered free), its price and its
            # place among the recent charges: tried again, it is no redelivery.
            recent = tuple(item for item in self.account.recent if item != (request.chunk, request.kind))
            last_chunk, last_kind = recent[-1] if recent else (None, None)
            self.account = replace(self.account, consumed=self.account.consumed - request.price, recent=recent,
                                   last_chunk=last_chunk, last_kind=last_kind)

    def adopt(self, state: ChannelState) -> ChannelState:
        """Take the host's record of the channel (OPEN_CHANNEL's or CHANNEL_STATE's reply).

        Raises:
            RemotePaymentError(BAD_PAYMENT): the state is for another channel, past its capacity, or
                above our total without our signature of it.
        """
        if self.channel is None:
            raise RuntimeError("no channel to adopt a state for")
        if state.channel != self.channel_id:
            raise RemotePaymentError(PaymentErrorCode.BAD_PAYMENT, "host reported another channel")
        if state.total > self.channel.params.max_total:
            raise RemotePaymentError(PaymentErrorCode.BAD_PAYMENT, "host reports a total beyond capacity")
        if state.total > self.channel.total:
            # We lost a signed payment (our ledger is older): never sign below
            # it, but only on our own signature of it (specs/payments.md §After
            # a crash): a host's word alone would raise the total we sign on.
            if state.sig is None or not self.channel.signed_by_us(state.total, state.sig):
                raise RemotePaymentError(PaymentErrorCode.BAD_PAYMENT, "host reports a total we never signed")
            self.channel.total = state.total
            self.last_sig, self._ahead = state.sig, None
        self.acknowledged = self.projected = state.total
        self.account = PeerAccount(consumed=state.consumed, paid=state.paid, last_chunk=state.last_chunk,
                                   last_kind=state.last_kind, recent=state.recent)
        if self.phase is Phase.FAILED and self.inflight == 0:
            self.phase = Phase.RESYNCED
        return state


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """The host refused a request with ERROR ``code`` (``owed`` from INSUFFICIENT_PAYMENT)."""

    code: int | None
    owed: int | None
    alone: bool


class PaymentRounds:
    """The attempts of one request: at most ``MAX_PAYMENT_ROUNDS``, topped up as the host asks.

    ``ceiling`` is one chunk of the largest size at our maximum price: a host
    asking more is refused (``PriceTooHigh``).

    A request tried again goes alone (``alone``), and its caller prices it
    at the most it may cost (a GET of unknown size: the largest chunk).  In
    a window the requests before it may be priced below what the host
    charges them (a GET of unknown size is priced as 1 MiB), so the same
    request tried in the window again would be refused again, and every
    other refused one with it, until their rounds ran out; alone, on the
    host's account adopted after the refusal and at a price no lower than
    the host's, it is served (specs/payments.md §Payer link states).
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.attempts = 0
        self.hint: int | None = None  # what the next attempt pays, when the host said so
        self.alone = False  # the next attempt goes with nothing else in flight

    def start(self) -> None:
        """An attempt begins."""
        if self.attempts >= MAX_PAYMENT_ROUNDS:
            raise RuntimeError("no attempt left")
        self.attempts += 1

    def refused(self, refusal: Refusal) -> bool:
        """Whether to try again after ``refusal``; False: it is final, raise it as is.

        Raises:
            PriceTooHigh: the host asks more than ``ceiling`` (or nothing) for one chunk.
            RemotePaymentError(INSUFFICIENT_PAYMENT): the attempts are used up.
        """
        if refusal.code == PaymentErrorCode.INSUFFICIENT_PAYMENT and refusal.owed is not None:
            if not 0 < refusal.owed <= self.ceiling:
                raise PriceTooHigh(f"host asks {refusal.owed} sats for one chunk; our ceiling is {self.ceiling}")
            # The host recorded nothing.  Its figure is exact only for a
            # request that went alone; else recompute after a resync.
            self.hint = refusal.owed if refusal.alone else None
        elif refusal.code in (PaymentErrorCode.PAYMENT_REPLAY, PaymentErrorCode.PAYMENT_TOTAL_LOWER):
            self.hint = None  # the link resynchronises before the next attempt
        else:
            return False
        if self.attempts >= MAX_PAYMENT_ROUNDS:
            raise RemotePaymentError(PaymentErrorCode.INSUFFICIENT_PAYMENT, "host kept refusing payment")
        self.alone = True
        return True


class ChannelOpenBudget:
    """How many channels the payer may still open to one host: ``MAX_CHANNEL_OPENS_PER_PERIOD``
    per ``CHANNEL_OPEN_PERIOD`` seconds (the caller passes the time).

    An open that replaces a channel the host served enough on
    (``Abandoned.served``) is not counted, once per replaced channel: a
    second open for the same one (the first funding failed) counts
    (specs/payments.md §Channel recovery).
    """

    def __init__(self, *, limit: int = MAX_CHANNEL_OPENS_PER_PERIOD, period: float = CHANNEL_OPEN_PERIOD) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("a budget allows at least one open per positive period")
        self.limit = limit
        self.period = period
        self._opened: list[float] = []
        self._replaced: ChannelId | None = None  # the last channel replaced without counting

    def counts(self, replacing: Abandoned | None) -> bool:
        """Whether an open that replaces ``replacing`` (None: no channel given up before it) is counted."""
        return replacing is None or not replacing.served or replacing.channel_id == self._replaced

    def allows(self, now: float, replacing: Abandoned | None = None) -> bool:
        """Whether one more channel, replacing ``replacing``, may be opened at ``now``."""
        self._opened = [t for t in self._opened if now - t < self.period]
        return not self.counts(replacing) or len(self._opened) < self.limit

    def spend(self, now: float, replacing: Abandoned | None = None) -> None:
        """A channel replacing ``replacing`` is being opened at ``now``.

        Raises:
            RuntimeError: the budget is used up (ask ``allows`` first).
        """
        if not self.allows(now, replacing):
            raise RuntimeError("no channel open left in this period")
        if self.counts(replacing):
            self._opened.append(now)
        else:
            assert replacing is not None
            self._replaced = replacing.channel_id
