"""Payments between nodes, pure: terms and prices, accounting, the payer's and the payee's
per-channel rules as state machines, refusals, and the vocabulary they share.

The channel transactions themselves live in ``protocol.bitcoin``; this
package holds what the exchange adds on top (specs/payments.md Part 2: the
paid exchange).  ``payer`` and ``payee`` take events and return decisions;
``node.exchange`` carries them out (sessions, ledger writes, timers).
"""

from protocol.payments.accounting import MAX_PAID_WINDOW, REDELIVERY_DEPTH, PeerAccount, next_total, paid_window
from protocol.payments.errors import (
    LocalPaymentError,
    PaymentError,
    PaymentErrorCode,
    PriceTooHigh,
    RemotePaymentError,
)
from protocol.payments.payee import ChargeRequest, PayeeEntry, decide_charge, decide_open
from protocol.payments.payer import MAX_PAYMENT_ROUNDS, PayerLink, PaymentRounds
from protocol.payments.terms import MIB, Terms, chunk_price
from protocol.payments.vocabulary import ChannelStatus, Direction, Kind, Role, SettlementKind, SettlementStatus

__all__ = [
    "MAX_PAID_WINDOW", "MAX_PAYMENT_ROUNDS", "MIB", "REDELIVERY_DEPTH",
    "ChannelStatus", "ChargeRequest", "Direction", "Kind", "LocalPaymentError", "PayeeEntry", "PayerLink",
    "PaymentError", "PaymentErrorCode", "PaymentRounds", "PeerAccount", "PriceTooHigh", "RemotePaymentError",
    "Role", "SettlementKind", "SettlementStatus", "Terms",
    "chunk_price", "decide_charge", "decide_open", "next_total", "paid_window",
]
