"""What a peer owes: the payee's accounting, mirrored by the payer.

Both sides keep, per peer pair and direction, an account of two running
sums: ``consumed`` (the price of every request charged, free or paid) and
``paid`` (every channel increment received).  A request of price ``p`` is
served when, after it, the unpaid consumption is within the free allowance:

    consumed + p - paid - increment <= allowance

so the increment it must carry is ``owed = max(0, consumed + p - allowance
- paid)``; an increment above ``owed`` is credit for later requests.  Since
every accepted request restores ``consumed - paid <= allowance``, ``owed``
never exceeds one request's price: a payer never has more than one chunk's
price in flight.  (specs/payments.md §Accounting.)

Redelivery: a request for the same chunk and kind as the last one charged
is served again without a new charge.  This is what lets a payee that
recorded a payment and then crashed before answering hand the chunk over
after the restart, and a payer retry without paying twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.payments.errors import LocalPaymentError, PaymentErrorCode


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAccount:
    """Running sums for one peer in one direction (int sats)."""

    consumed: int = 0
    paid: int = 0
    last_chunk: bytes | None = None
    last_kind: str | None = None

    def is_redelivery(self, chunk: bytes, kind: str) -> bool:
        """True when ``chunk``/``kind`` is the last request already charged."""
        return self.last_chunk == chunk and self.last_kind == kind

    def owed(self, price: int, allowance: int) -> int:
        """The smallest increment that lets a request of ``price`` be served."""
        return max(0, self.consumed + price - allowance - self.paid)

    def charge(self, *, chunk: bytes, kind: str, price: int, increment: int, allowance: int) -> PeerAccount:
        """The account after serving a request of ``price`` paid with ``increment``.

        Raises:
            LocalPaymentError(INSUFFICIENT_PAYMENT): ``increment`` is below what
            is owed; ``owed`` on the error is that amount.
        """
        if price < 0 or increment < 0:
            raise ValueError("price and increment must be non-negative")
        owed = self.owed(price, allowance)
        if increment < owed:
            raise LocalPaymentError(
                PaymentErrorCode.INSUFFICIENT_PAYMENT,
                f"request costs {price} sats; {owed} owed past the free allowance, {increment} offered",
                owed=owed,
            )
        return PeerAccount(consumed=self.consumed + price, paid=self.paid + increment, last_chunk=chunk, last_kind=kind)


def next_total(*, owed: int, acknowledged_total: int, signed_total: int) -> int | None:
    """The channel total a payer signs for a request that owes ``owed``.

    ``acknowledged_total`` is the last total the payee confirmed (by serving,
    or in CHANNEL_STATE); ``signed_total`` the highest the payer ever signed.
    None means no payment is needed.  A payment the payee never recorded is
    re-sent at the same total rather than paid again, and the payer never
    signs below what the payee has (specs/payments.md §After a crash).
    """
    if owed < 0 or acknowledged_total < 0 or signed_total < 0:
        raise ValueError("amounts must be non-negative")
    if owed == 0:
        return None
    return max(signed_total, acknowledged_total + owed)
