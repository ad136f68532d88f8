"""The ledger's service balances (schema v3, specs/payments.md §Service balance "State", §Ledger)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from node.ledger import SCHEMA_VERSION, Ledger
from node.ledger._schema import MIGRATIONS
from protocol.payments.balance import PeerBalance

PEER = "bb" * 20


def test_a_version_two_ledger_gains_the_balances_table_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + ";" + MIGRATIONS[1] + ";PRAGMA user_version = 2;")
    conn.execute("INSERT INTO payments (id, peer, direction, kind, chunk, price, amount, at) "
                 "VALUES (3, ?, 'in', 'audit', ?, 5, 0, 1.0)", (PEER, "01" * 32))
    conn.commit()
    conn.close()
    with Ledger.open(path) as ledger:
        assert [(r.id, r.price) for r in ledger.payments(peer=PEER)] == [(3, 5)]
        assert ledger.balance(PEER) == PeerBalance()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
    conn.close()


def test_a_balance_is_written_whole_and_read_back_after_reopening(tmp_path: Path) -> None:
    view = PeerBalance(given=500, taken=120, paid_out=0, paid_in=300, acked_given=400)
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.record_balance(PEER, PeerBalance(given=10))
        ledger.record_balance(PEER, view)
    with Ledger.open(tmp_path / "l.db") as ledger:
        assert ledger.balance(PEER) == view
        assert ledger.balance("cc" * 20) == PeerBalance()


def test_the_schema_refuses_an_acknowledgement_above_what_was_given(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        pass
    conn = sqlite3.connect(tmp_path / "l.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO balances VALUES (?, 1, 0, 0, 0, 2, 0, 0.0)", (PEER,))
    conn.close()


def test_earnings_add_balances_to_the_paid_accounts(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.record_payment(peer=PEER, direction="out", kind="get", chunk="03" * 32, price=70, amount=0)
        ledger.record_balance(PEER, PeerBalance(given=900, taken=200))
        balances = ledger.earnings()["balances"]
    assert balances["per_peer"][PEER] == {"given": 900, "taken": 270, "paid_in": 0, "paid_out": 0, "net": 630}
    assert balances["net"] == 630
