"""Ledger schema and its ordered migrations (specs/payments.md §Ledger).

The schema version lives in ``PRAGMA user_version``.  ``MIGRATIONS[i]``
moves a database from version ``i`` to ``i + 1``; opening a ledger applies
every step past the stored version inside one transaction, so a crash
during an upgrade leaves the old version intact.  A database newer than this
code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

# Version 1: channels, payments, per-peer accounts, settlements.
_V1 = """
CREATE TABLE channels (
    channel_id     TEXT PRIMARY KEY,          -- funding txid hex ':' vout
    role           TEXT NOT NULL CHECK (role IN ('payer', 'payee')),
    peer           TEXT NOT NULL,             -- peer node id, hex
    state          TEXT NOT NULL,             -- see CHANNEL_STATES
    capacity       INTEGER NOT NULL CHECK (capacity > 0),
    total          INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    payer_sig      BLOB,                      -- latest payer signature (DER+hashtype)
    funding_txid   TEXT NOT NULL,
    funding_vout   INTEGER NOT NULL,
    expiry         INTEGER NOT NULL,          -- CLTV expiry height
    params         BLOB NOT NULL,             -- msgpack channel parameters
    opened_at      REAL NOT NULL,
    updated_at     REAL NOT NULL
);
CREATE INDEX channels_peer ON channels (peer, role);

CREATE TABLE payments (
    id             INTEGER PRIMARY KEY,
    peer           TEXT NOT NULL,
    direction      TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind           TEXT NOT NULL CHECK (kind IN ('get', 'put')),
    chunk          TEXT NOT NULL,             -- chunk address, hex
    price          INTEGER NOT NULL CHECK (price >= 0),
    amount         INTEGER NOT NULL CHECK (amount >= 0),
    channel_id     TEXT REFERENCES channels (channel_id),
    total          INTEGER,                   -- channel total after this payment
    at             REAL NOT NULL
);
CREATE INDEX payments_peer ON payments (peer, direction);
CREATE INDEX payments_channel ON payments (channel_id);

CREATE TABLE accounts (
    peer           TEXT NOT NULL,
    direction      TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    consumed       INTEGER NOT NULL DEFAULT 0,   -- value of service charged
    paid           INTEGER NOT NULL DEFAULT 0,   -- sats paid through channels
    last_chunk     TEXT,                         -- chunk of the latest charge
    last_kind      TEXT,
    PRIMARY KEY (peer, direction)
);

CREATE TABLE settlements (
    id             INTEGER PRIMARY KEY,
    channel_id     TEXT NOT NULL REFERENCES channels (channel_id),
    kind           TEXT NOT NULL CHECK (kind IN ('close', 'refund')),
    txid           TEXT NOT NULL UNIQUE,
    amount         INTEGER NOT NULL CHECK (amount >= 0),
    state          TEXT NOT NULL CHECK (state IN ('broadcast', 'confirmed')),
    height         INTEGER,
    at             REAL NOT NULL
);
"""

def _payments_with_kinds(version: int, kinds: str) -> str:
    """The statements that copy ``payments`` into one whose ``kind`` CHECK allows ``kinds``, ids kept.

    SQLite cannot change a CHECK in place, so each migration that admits a
    new kind copies the table; the copies differ only in the list of kinds.
    """
    return f"""
CREATE TABLE payments_v{version} (
    id             INTEGER PRIMARY KEY,
    peer           TEXT NOT NULL,
    direction      TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind           TEXT NOT NULL CHECK (kind IN ({kinds})),
    chunk          TEXT NOT NULL,             -- chunk address, hex (an audit's nonce, a renewal's id, a settle's total)
    price          INTEGER NOT NULL CHECK (price >= 0),
    amount         INTEGER NOT NULL CHECK (amount >= 0),
    channel_id     TEXT REFERENCES channels (channel_id),
    total          INTEGER,                   -- channel total after this payment
    at             REAL NOT NULL
);
INSERT INTO payments_v{version} SELECT id, peer, direction, kind, chunk, price, amount, channel_id, total, at FROM payments;
DROP TABLE payments;
ALTER TABLE payments_v{version} RENAME TO payments;
CREATE INDEX payments_peer ON payments (peer, direction);
CREATE INDEX payments_channel ON payments (channel_id)
"""


# Version 2: a payment's kind may be 'audit' or 'renew' (specs/erasure.md §7.4 Paid audits, §9 Renewal).
_V2 = _payments_with_kinds(2, "'get', 'put', 'audit', 'renew'")

# Version 3: a payment's kind may be 'settle' (a service balance's imbalance paid), and the service balance
# with each peer in balance mode (specs/payments.md §Service balance, "State"): one row per peer, its
# cumulative sums.
_V3 = _payments_with_kinds(3, "'get', 'put', 'audit', 'renew', 'settle'") + """;
CREATE TABLE balances (
    peer           TEXT PRIMARY KEY,             -- peer node id, hex
    given          INTEGER NOT NULL CHECK (given >= 0),           -- service we gave the peer, sats
    taken          INTEGER NOT NULL CHECK (taken >= 0),           -- service the peer gave us
    paid_out       INTEGER NOT NULL CHECK (paid_out >= 0),        -- sats we paid it through our channel
    paid_in        INTEGER NOT NULL CHECK (paid_in >= 0),         -- sats it paid us
    acked_given    INTEGER NOT NULL CHECK (acked_given BETWEEN 0 AND given),
    acked_paid_out INTEGER NOT NULL CHECK (acked_paid_out BETWEEN 0 AND paid_out),
    updated_at     REAL NOT NULL
)
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)


class LedgerVersionError(Exception):
    """The database was written by a newer mu than this one."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring ``conn``'s schema to ``SCHEMA_VERSION``; return the old version.

    Raises:
        LedgerVersionError: the stored version is newer than this code knows.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise LedgerVersionError(f"ledger schema version {version} is newer than supported {SCHEMA_VERSION}")
    if version == SCHEMA_VERSION:
        return int(version)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in MIGRATIONS[version:]:
            for statement in step.split(";"):
                if statement.strip():
                    conn.execute(statement)
        # PRAGMA takes no bound parameters; the value is our own integer.
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(version)
