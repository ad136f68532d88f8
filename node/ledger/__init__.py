"""The node's SQLite ledger of channels, payments and settlements.

See ``specs/payments.md`` §Ledger for the schema and its guarantees.
"""

from node.ledger._commit import MAX_GROUP_COMMIT
from node.ledger._ledger import (
    CHANNEL_STATES,
    LEDGER_FILE,
    Account,
    ChannelRecord,
    Ledger,
    LedgerError,
    PaymentEntry,
    PaymentRecord,
    SettlementRecord,
    StaleTotal,
    UnknownChannel,
)
from node.ledger._schema import SCHEMA_VERSION, LedgerVersionError

__all__ = [
    "CHANNEL_STATES", "LEDGER_FILE", "MAX_GROUP_COMMIT", "SCHEMA_VERSION", "Account", "ChannelRecord", "Ledger",
    "LedgerError", "LedgerVersionError", "PaymentEntry", "PaymentRecord", "SettlementRecord", "StaleTotal",
    "UnknownChannel",
]
