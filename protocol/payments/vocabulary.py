"""The payment vocabulary as types: what a charge is for, which way it goes, who holds a channel.

Each member's value is the string the wire and the ledger carry
(specs/payments.md §Ledger, §Channel messages), so an enum member compares
and stores as that string and old rows read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What a charged request did: fetched a chunk, stored one, proved it holds a share, renewed one."""

    GET = "get"
    PUT = "put"
    AUDIT = "audit"  # a storage audit the owner checked, then paid (specs/erasure.md §7.4 Paid audits)
    RENEW = "renew"  # a PUT that extends a held chunk's retention, named by its own id (specs/erasure.md §9)
    SETTLE = "settle"  # a payment of a service balance's imbalance, no service (specs/payments.md §Service balance)


class Direction(StrEnum):
    """A ledger row's side: sats we earned (``IN``) or spent (``OUT``)."""

    IN = "in"
    OUT = "out"


class Role(StrEnum):
    """Our side of a channel: we pay through it, or we are paid through it."""

    PAYER = "payer"
    PAYEE = "payee"


class ChannelStatus(StrEnum):
    """A channel's life in the ledger (specs/payments.md §Ledger).

    open -> closing -> closed (the payee settled), or open -> refunding ->
    refunded (the payer took its refund after the expiry).
    """

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    REFUNDING = "refunding"
    REFUNDED = "refunded"


class SettlementKind(StrEnum):
    """What a settlement transaction does: the payee's close or the payer's refund."""

    CLOSE = "close"
    REFUND = "refund"


class SettlementStatus(StrEnum):
    """A settlement transaction's life in the ledger: sent, then mined."""

    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
