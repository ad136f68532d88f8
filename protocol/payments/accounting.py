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

Redelivery: a request for the same chunk and kind as one of the last
``REDELIVERY_DEPTH`` charged is served again without a new charge.  This is
what lets a payee that recorded payments and then crashed before answering
hand the chunks over after the restart, and a payer retry without paying
twice.  The depth equals the largest paid window (``MAX_PAID_WINDOW``): a
payer with that many requests in flight may find all of them recorded and
none delivered after a crash.

Paid window: a payer may have ``paid_window(price, allowance)`` paid
requests in flight at once, each carrying the smallest increment owed as if
the ones before it were charged.  With ``W`` in flight the payer has signed
``consumed_after_all - allowance`` while it holds ``consumed_after_all -
(value in flight)``, so what it paid for and has not received is at most
``W * price - allowance``; ``W = 1 + allowance // price`` keeps that within
one request's price (specs/payments.md §Paid window).
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.payments.errors import LocalPaymentError, PaymentErrorCode

# Most paid requests a payer keeps in flight to one payee (specs/payments.md
# §Paid window): deep enough to cover a round trip of 1 MiB chunks at a few
# hundred MiB/s; also how many recent charges a payee redelivers for free.
MAX_PAID_WINDOW = 16
REDELIVERY_DEPTH = MAX_PAID_WINDOW


def paid_window(price: int, allowance: int) -> int:
    """How many paid requests of ``price`` may be in flight under ``allowance``.

    ``1 + allowance // price`` (at most ``MAX_PAID_WINDOW``): then the payer
    has paid at most ``price`` for requests it has not received yet.
    """
    if price < 0 or allowance < 0:
        raise ValueError("price and allowance must be non-negative")
    if price == 0:
        return MAX_PAID_WINDOW
    return max(1, min(MAX_PAID_WINDOW, 1 + allowance // price))


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAccount:
    """Running sums for one peer in one direction (int sats)."""

    consumed: int = 0
    paid: int = 0
    last_chunk: bytes | None = None
    last_kind: str | None = None
    # The last REDELIVERY_DEPTH charges (chunk, kind), oldest first; the last
    # one is (last_chunk, last_kind) when both are set.
    recent: tuple[tuple[bytes, str], ...] = ()

    def is_redelivery(self, chunk: bytes, kind: str) -> bool:
        """True when ``chunk``/``kind`` is one of the recent requests already charged."""
        return (self.last_chunk == chunk and self.last_kind == kind) or (chunk, kind) in self.recent

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
        return PeerAccount(consumed=self.consumed + price, paid=self.paid + increment, last_chunk=chunk, last_kind=kind,
                           recent=self.remember(chunk, kind))

    def remember(self, chunk: bytes, kind: str) -> tuple[tuple[bytes, str], ...]:
        """``recent`` after a charge of ``chunk``/``kind``."""
        kept = tuple(item for item in self.recent if item != (chunk, kind))
        return (kept + ((chunk, kind),))[-REDELIVERY_DEPTH:]


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
