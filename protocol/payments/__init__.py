"""Payments between nodes, pure: terms and prices, accounting, refusals.

The channel transactions themselves live in ``protocol.bitcoin``; this
package holds what the exchange adds on top (specs/payments.md §Exchange).
"""

from protocol.payments.accounting import MAX_PAID_WINDOW, REDELIVERY_DEPTH, PeerAccount, next_total, paid_window
from protocol.payments.errors import (
    LocalPaymentError,
    PaymentError,
    PaymentErrorCode,
    PriceTooHigh,
    RemotePaymentError,
)
from protocol.payments.payer import MAX_PAYMENT_ROUNDS, PayerLink, PaymentRounds
from protocol.payments.terms import MIB, Terms, chunk_price
from protocol.payments.vocabulary import ChannelStatus, Direction, Kind, Role, SettlementStatus

__all__ = [
    "MAX_PAID_WINDOW", "MIB", "ChannelStatus", "Direction", "Kind", "Role", "SettlementStatus", "REDELIVERY_DEPTH", "LocalPaymentError", "PaymentError", "PaymentErrorCode", "PeerAccount", "PriceTooHigh",
    "RemotePaymentError", "Terms", "chunk_price", "next_total", "paid_window",
    "MAX_PAYMENT_ROUNDS", "PayerLink", "PaymentRounds",
]
