"""The per-peer service balance, pure: service both ways offsets, only the imbalance is paid.

Two nodes that serve each other (GETs, PUTs, retention, audits, each priced
in sats by the server's terms) keep one running balance per peer pair
instead of paying every request (specs/payments.md §Service balance).  Each
side holds its own view, a ``PeerBalance`` of four cumulative sums:

    given      value of the service we gave the peer (recorded before serving)
    taken      value of the service the peer gave us (recorded before acknowledging)
    paid_out   sats we paid the peer through our channel (recorded before sending)
    paid_in    sats the peer paid us (recorded before acknowledging)

and ``net = given - taken + paid_out - paid_in``: what the peer owes us (a
negative net is what we owe).  The receiver of service or of a payment
answers with a signed ``BalanceAck`` of its ``taken`` and ``paid_in``
totals, cumulative so a replayed or reordered one can only be refused.

Rules (one place, as ``PayeeEntry`` keeps the payee's):

- serve a request of price ``p`` only if ``net + p <= disconnect_threshold``
  (else ``DISCONNECT_THRESHOLD``) and the service the peer has not
  acknowledged stays within ``in_flight_limit`` (else ``WINDOW_FULL``);
- pay when what we owe reaches ``payment_threshold`` and no payment of ours
  is unacknowledged, and pay exactly what we owe (``payment_due``);
- on a new session (nothing in flight) adopt the peer's acknowledgement:
  unacknowledged service is forgiven and an unacknowledged payment is sent
  again at the same channel total (``resync``).

So each side's view of the peer's debt never passes the disconnect
threshold, and the two views differ by exactly what is in flight, never
more than ``view_gap_bound(terms)``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from protocol.identity import NODE_ID_SIZE, SIGNATURE_SIZE, Identity, verify_signature

BALANCE_ACK_TAG = b"mu:balance-ack:v1"
_ACK_BODY = struct.Struct(f">{NODE_ID_SIZE}s{NODE_ID_SIZE}sQQ")
BALANCE_ACK_SIZE = _ACK_BODY.size + SIGNATURE_SIZE  # 120 bytes
MAX_BALANCE_SATS = 21 * 10**14  # all bitcoin: no cumulative sum may pass it

# Defaults (specs/payments.md §Service balance, "Definitions"): a payment
# every 10,000 sats of imbalance amortises a channel signature and ledger
# row over about 100 MiB of GETs at the default prices; 16 requests of 1 MiB
# PUTs at 300 sats fit the in-flight limit.
DEFAULT_PAYMENT_THRESHOLD = 10_000
DEFAULT_IN_FLIGHT_LIMIT = 5_000
DEFAULT_DISCONNECT_THRESHOLD = 30_000


class BalanceErrorCode(enum.IntEnum):
    """Why a balance step was refused (ERROR ``code`` when it answers a peer)."""

    DISCONNECT_THRESHOLD = 0x50  # serving would put the peer's debt past the disconnect threshold
    WINDOW_FULL = 0x51  # the peer has not acknowledged enough of the service already given
    BAD_BALANCE_ACK = 0x52  # acknowledgement malformed, badly signed, above what we sent, or lower than before
    BAD_BALANCE_STEP = 0x53  # our own call is wrong: an amount out of range, a payment not due


class BalanceError(ValueError):
    """A refused balance step; ``code`` says why (``BalanceErrorCode``)."""

    def __init__(self, code: BalanceErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = BalanceErrorCode(code)


def _amount(value: int, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_BALANCE_SATS:
        raise BalanceError(BalanceErrorCode.BAD_BALANCE_STEP, f"{name} must be an integer in [0, {MAX_BALANCE_SATS}]")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceTerms:
    """The thresholds one node applies to every peer's balance (int sats).

    Attributes:
        payment_threshold: what we owe before we pay it.
        disconnect_threshold: most a peer may owe us; service past it is refused.
        in_flight_limit: most service value given and not yet acknowledged.
    """

    payment_threshold: int = DEFAULT_PAYMENT_THRESHOLD
    disconnect_threshold: int = DEFAULT_DISCONNECT_THRESHOLD
    in_flight_limit: int = DEFAULT_IN_FLIGHT_LIMIT

    def __post_init__(self) -> None:
        for name in ("payment_threshold", "disconnect_threshold", "in_flight_limit"):
            if _amount(getattr(self, name), name) == 0:
                raise BalanceError(BalanceErrorCode.BAD_BALANCE_STEP, f"{name} must be positive")
        # A peer that pays as soon as it is due must have room for its
        # payment's round trip and a window each way before it is refused.
        if self.disconnect_threshold < self.payment_threshold + 2 * self.in_flight_limit:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_STEP,
                               "disconnect_threshold must be at least payment_threshold + 2 x in_flight_limit")


def in_balance_mode(our_offer: int, peer_offer: int) -> bool:
    """True when two nodes keep a service balance instead of paying each request.

    Both must offer storage to reciprocating peers (terms ``offer`` > 0;
    terms without it offer 0): a node that offers nothing pays for
    everything, as before (specs/payments.md §Service balance, "Balance mode").
    """
    return our_offer > 0 and peer_offer > 0


def view_gap_bound(terms: BalanceTerms) -> int:
    """Most by which two peers' views of one balance differ (``net`` of one plus ``net`` of the other).

    The gap is exactly the service and payments in flight between them (at
    most ``in_flight_limit`` of service each way), and since each side's
    ``net`` stays within ``disconnect_threshold`` it is never more than twice
    that, whatever the payments in flight.
    """
    return 2 * terms.disconnect_threshold


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceAck:
    """A signed acknowledgement: what ``signer`` has received from ``peer``, cumulative.

    Attributes:
        signer: node id (20 bytes) of the node acknowledging.
        peer: node id of the node it received from.
        service_received: the signer's ``taken`` towards ``peer``, sats.
        payment_received: the signer's ``paid_in`` from ``peer``, sats.
        signature: Ed25519 over ``BALANCE_ACK_TAG || body`` by the signer's identity key.
    """

    signer: bytes
    peer: bytes
    service_received: int
    payment_received: int
    signature: bytes

    def __post_init__(self) -> None:
        bad = BalanceErrorCode.BAD_BALANCE_ACK
        if not (isinstance(self.signer, bytes) and isinstance(self.peer, bytes)
                and len(self.signer) == len(self.peer) == NODE_ID_SIZE and self.signer != self.peer):
            raise BalanceError(bad, f"signer and peer must be distinct {NODE_ID_SIZE}-byte node ids")
        for name in ("service_received", "payment_received"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_BALANCE_SATS:
                raise BalanceError(bad, f"{name} must be an integer in [0, {MAX_BALANCE_SATS}]")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise BalanceError(bad, f"signature must be {SIGNATURE_SIZE} bytes")

    @classmethod
    def sign(cls, identity: Identity, *, peer: bytes, service_received: int, payment_received: int) -> BalanceAck:
        """Acknowledge, as ``identity``, what we have received from ``peer``."""
        body = _ACK_BODY.pack(identity.node_id, peer, service_received, payment_received)
        return cls(signer=identity.node_id, peer=peer, service_received=service_received,
                   payment_received=payment_received, signature=identity.sign(BALANCE_ACK_TAG + body))

    def body(self) -> bytes:
        """The 56 signed bytes after the tag."""
        return _ACK_BODY.pack(self.signer, self.peer, self.service_received, self.payment_received)

    def verify(self, public_key: bytes) -> bool:
        """True when the signature is the signer's (``public_key`` proven in the handshake)."""
        return verify_signature(public_key, BALANCE_ACK_TAG + self.body(), self.signature)

    def serialize(self) -> bytes:
        """``body || signature``, ``BALANCE_ACK_SIZE`` bytes."""
        return self.body() + self.signature

    def to_wire(self, payment: object = None) -> dict[str, object]:
        """The BALANCE_ACK message's fields (specs/wire.md §6 Messages): ``ack`` bin120 and, when the
        sender settles its debt (rule 3), ``payment`` (a channel payment as GET_CHUNK's)."""
        fields: dict[str, object] = {"ack": self.serialize()}
        if payment is not None:
            fields["payment"] = payment
        return fields

    @classmethod
    def from_wire(cls, fields: object) -> tuple[BalanceAck, object]:
        """Read BALANCE_ACK's fields: the acknowledgement and the payment (None when absent).

        Raises:
            BalanceError(BAD_BALANCE_ACK): other fields, or a malformed acknowledgement.
        """
        if not isinstance(fields, dict) or not {"ack"} <= set(fields) <= {"ack", "payment"}:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_ACK, "BALANCE_ACK has the fields ack and payment only")
        if "payment" in fields and fields["payment"] is None:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_ACK, "an absent payment is left out")
        return cls.parse(fields["ack"]), fields.get("payment")

    @classmethod
    def parse(cls, raw: bytes) -> BalanceAck:
        """Read ``serialize()``'s form; BAD_BALANCE_ACK unless exactly ``BALANCE_ACK_SIZE`` bytes."""
        if not isinstance(raw, bytes) or len(raw) != BALANCE_ACK_SIZE:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_ACK, f"a balance ack is {BALANCE_ACK_SIZE} bytes")
        signer, peer, service, payment = _ACK_BODY.unpack(raw[:_ACK_BODY.size])
        return cls(signer=signer, peer=peer, service_received=service, payment_received=payment,
                   signature=raw[_ACK_BODY.size:])


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerBalance:
    """Our view of the balance with one peer (cumulative int sats; see the module docstring).

    ``acked_given`` and ``acked_paid_out`` are the peer's latest
    acknowledgement of our ``given`` and ``paid_out``.
    """

    given: int = 0
    taken: int = 0
    paid_out: int = 0
    paid_in: int = 0
    acked_given: int = 0
    acked_paid_out: int = 0

    def __post_init__(self) -> None:
        for name in ("given", "taken", "paid_out", "paid_in", "acked_given", "acked_paid_out"):
            _amount(getattr(self, name), name)
        if self.acked_given > self.given or self.acked_paid_out > self.paid_out:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_STEP, "acknowledged more than given or paid")

    @property
    def net(self) -> int:
        """What the peer owes us, sats; negative when we owe it."""
        return self.given - self.taken + self.paid_out - self.paid_in

    @property
    def unacknowledged(self) -> int:
        """Service and payment we sent that the peer has not acknowledged yet."""
        return self.given - self.acked_given + self.paid_out - self.acked_paid_out

    def _with(self, **changes: int) -> PeerBalance:
        fields = {name: getattr(self, name) for name in
                  ("given", "taken", "paid_out", "paid_in", "acked_given", "acked_paid_out")}
        fields.update(changes)
        return PeerBalance(**fields)

    def serve(self, price: int, terms: BalanceTerms) -> PeerBalance:
        """The balance after serving the peer a request of ``price``; record it before serving.

        Raises:
            BalanceError(DISCONNECT_THRESHOLD): the peer would owe more than the threshold.
            BalanceError(WINDOW_FULL): too much service is still unacknowledged.
        """
        _amount(price, "price")
        if self.net + price > terms.disconnect_threshold:
            raise BalanceError(BalanceErrorCode.DISCONNECT_THRESHOLD,
                               f"peer owes {self.net} sats; {price} more passes the disconnect threshold "
                               f"{terms.disconnect_threshold}")
        if self.given - self.acked_given + price > terms.in_flight_limit:
            raise BalanceError(BalanceErrorCode.WINDOW_FULL,
                               f"{self.given - self.acked_given} sats of service unacknowledged; {price} more "
                               f"passes the in-flight limit {terms.in_flight_limit}")
        return self._with(given=_amount(self.given + price, "given"))

    def take(self, price: int) -> PeerBalance:
        """The balance after receiving service of ``price``; record it before acknowledging."""
        return self._with(taken=_amount(self.taken + _amount(price, "price"), "taken"))

    def payment_due(self, terms: BalanceTerms) -> int:
        """Sats to pay now: all we owe once it reaches the payment threshold, else 0.

        Nothing is due while a payment of ours is unacknowledged: one payment in
        flight at a time is all a crash can leave to send again, at the same
        channel total (``resync``).
        """
        owed = -self.net
        if owed < terms.payment_threshold or self.paid_out > self.acked_paid_out:
            return 0
        return owed

    def pay(self, amount: int) -> PeerBalance:
        """The balance after paying ``amount``; record it before the payment leaves.

        Raises:
            BalanceError(BAD_BALANCE_STEP): ``amount`` is not positive, is more than
            we owe, or a payment of ours is still unacknowledged.
        """
        if _amount(amount, "amount") == 0 or amount > -self.net:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_STEP, f"pay 1 to {-self.net} sats, not {amount}")
        if self.paid_out > self.acked_paid_out:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_STEP, "a payment is still unacknowledged")
        return self._with(paid_out=self.paid_out + amount)

    def withdraw_payment(self, amount: int) -> PeerBalance:
        """The balance after taking back our payment of ``amount`` that never left (its records failed).

        Raises:
            BalanceError(BAD_BALANCE_STEP): ``amount`` is more than our unacknowledged payment.
        """
        if _amount(amount, "amount") > self.paid_out - self.acked_paid_out:
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_STEP,
                               f"withdraw at most the unacknowledged {self.paid_out - self.acked_paid_out} sats")
        return self._with(paid_out=self.paid_out - amount)

    def receive_payment(self, amount: int) -> PeerBalance:
        """The balance after the peer paid ``amount``; record it before acknowledging."""
        return self._with(paid_in=_amount(self.paid_in + _amount(amount, "amount"), "paid_in"))

    def acknowledge(self, ack: BalanceAck) -> PeerBalance:
        """Our view after the peer's acknowledgement ``ack`` (signature already checked).

        Raises:
            BalanceError(BAD_BALANCE_ACK): ``ack`` claims more than we gave or
            paid, or less than the peer acknowledged before.
        """
        self._check(ack)
        return self._with(acked_given=ack.service_received, acked_paid_out=ack.payment_received)

    def resync(self, ack: BalanceAck) -> PeerBalance:
        """Our view on a new session, from the peer's acknowledgement ``ack`` with nothing in flight.

        Service the peer never acknowledged did not reach it, or reached it and
        was lost in its crash: it is forgiven (at most ``in_flight_limit``).  A
        payment it never acknowledged was not recorded: it is taken back, and the
        next payment covers it at the same channel total (specs/payments.md
        §After a crash).  Afterwards both views agree exactly.
        """
        self._check(ack)
        return self._with(given=ack.service_received, acked_given=ack.service_received,
                          paid_out=ack.payment_received, acked_paid_out=ack.payment_received)

    def _check(self, ack: BalanceAck) -> None:
        if not (self.acked_given <= ack.service_received <= self.given
                and self.acked_paid_out <= ack.payment_received <= self.paid_out):
            raise BalanceError(BalanceErrorCode.BAD_BALANCE_ACK,
                               f"ack of {ack.service_received} service and {ack.payment_received} paid is outside "
                               f"[{self.acked_given}, {self.given}] and [{self.acked_paid_out}, {self.paid_out}]")
