"""Payment refusals, each with its own code (specs/payments.md Part 2 §Error codes (ERROR `code`)).

A payee refuses a payment or a channel by sending ERROR with one of these
codes; the payer raises the matching ``RemotePaymentError``.  All are
request-level codes (>= 32, specs/wire.md §7): the session stays open.  The
four the wire already names keep its values (34-37); the others take the
0x40-0x5F block.
"""

from __future__ import annotations

import enum


class PaymentErrorCode(enum.IntEnum):
    """Why a payee refused (ERROR ``code``)."""

    INSUFFICIENT_PAYMENT = 34  # detail carries the amount owed, int sats
    PAYMENT_REPLAY = 0x41  # total equal to the last accepted total
    PAYMENT_TOTAL_LOWER = 0x42  # total below the last accepted total
    BAD_SIGNATURE = 35  # payer signature does not verify
    UNKNOWN_CHANNEL = 36  # no open channel with that id from this peer
    CHANNEL_EXPIRED = 37  # past the payee's close deadline
    FUNDING_UNCONFIRMED = 0x46  # funding output has too few confirmations
    FUNDING_SPENT = 0x47  # funding output missing or already spent
    FUNDING_MISMATCH = 0x48  # wrong script or amount in the funding output
    CAPACITY_TOO_SMALL = 0x49  # below the terms' minimum capacity
    EXPIRY_TOO_SOON = 0x4A  # too few blocks left before expiry
    TOTAL_OVER_CAPACITY = 0x4B  # total plus fee exceeds capacity
    BAD_TERMS = 0x4C  # terms malformed or not signed by the identity key
    BAD_PAYMENT = 0x4D  # payment record malformed
    CHANNEL_EXISTS = 0x4E  # that funding outpoint is already a channel


class PaymentError(Exception):
    """Base of every payment refusal; ``code`` is what goes on the wire."""

    def __init__(self, code: PaymentErrorCode, message: str, *, owed: int | None = None) -> None:
        super().__init__(message)
        self.code = PaymentErrorCode(code)
        self.owed = owed


class LocalPaymentError(PaymentError):
    """We are refusing something the peer sent (we send ERROR ``code``)."""


class RemotePaymentError(PaymentError):
    """The peer refused what we sent (it sent ERROR ``code``)."""


class PriceTooHigh(Exception):
    """The host's terms exceed the fetcher's configured maximum price."""
