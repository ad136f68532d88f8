"""Payments between nodes, pure: terms and prices, accounting, refusals.

The channel transactions themselves live in ``protocol.bitcoin``; this
package holds what the exchange adds on top (specs/payments.md Part 2: the paid exchange).
"""

from protocol.payments.accounting import MAX_PAID_WINDOW, REDELIVERY_DEPTH, PeerAccount, next_total, paid_window
from protocol.payments.errors import (
    LocalPaymentError,
    PaymentError,
    PaymentErrorCode,
    PriceTooHigh,
    RemotePaymentError,
)
from protocol.payments.terms import MIB, Terms, chunk_price
from protocol.payments.vocabulary import ChannelStatus, Direction, Kind, Role, SettlementKind, SettlementStatus
from protocol.payments.payee import ChargeRequest, PayeeEntry, decide_charge, decide_open

__all__ = [
    "MAX_PAID_WINDOW", "MIB", "ChannelStatus", "Direction", "Kind", "Role", "SettlementKind", "SettlementStatus", "REDELIVERY_DEPTH", "LocalPaymentError", "PaymentError", "PaymentErrorCode", "PeerAccount", "PriceTooHigh",
    "RemotePaymentError", "Terms", "chunk_price", "next_total", "paid_window",
    "ChargeRequest", "PayeeEntry", "decide_charge", "decide_open",
]
