"""Ledger schema version 2: a payment may be of kind audit (specs/erasure.md §7.4 Paid audits); a version-1
ledger is migrated in place, its rows and ids kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.ledger import SCHEMA_VERSION, Ledger, LedgerError
from node.ledger._schema import MIGRATIONS
from protocol.payments import Kind

PEER = "aa" * 20


def test_a_version_one_ledger_keeps_its_rows_and_takes_audit_payments(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + ";PRAGMA user_version = 1;")
    conn.execute("INSERT INTO payments (id, peer, direction, kind, chunk, price, amount, at) "
                 "VALUES (7, ?, 'in', 'put', ?, 75, 0, 1.0)", (PEER, "01" * 32))
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError):  # version 1 refuses the kind
        conn.execute("INSERT INTO payments (peer, direction, kind, chunk, price, amount, at) "
                     "VALUES (?, 'in', 'audit', ?, 7, 0, 1.0)", (PEER, "02" * 32))
    conn.close()
    with Ledger.open(path) as ledger:
        old = ledger.payments(peer=PEER)
        assert [(r.id, r.kind, r.price) for r in old] == [(7, Kind.PUT, 75)]
        ledger.record_payment(peer=PEER, direction="in", kind=Kind.AUDIT, chunk="02" * 32, price=7, amount=0)
        assert [r.kind for r in ledger.payments(peer=PEER)] == [Kind.PUT, Kind.AUDIT]
        with pytest.raises(LedgerError):
            ledger.record_payment(peer=PEER, direction="in", kind="probe", chunk="03" * 32, price=7, amount=0)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"payments_peer", "payments_channel"} <= indexes
    conn.close()
