"""The SQLite ledger: schema, durability, replay refusal, group commit, reports."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio

from node.ledger import (
    SCHEMA_VERSION,
    ChannelRecord,
    Ledger,
    LedgerError,
    LedgerVersionError,
    PaymentEntry,
    StaleTotal,
    UnknownChannel,
)
from protocol.payments import Direction, Kind

PEER = "aa" * 20
DAY = 1_790_000_000.0  # 2026-09-21 UTC


def channel(cid: str = "ff" * 32 + ":0", *, role: str = "payee", peer: str = PEER) -> ChannelRecord:
    return ChannelRecord(
        channel_id=cid, role=role, peer=peer, state="open", capacity=100_000, total=0, payer_sig=None,
        funding_txid=cid.split(":")[0], funding_vout=0, expiry=500, params=b"\x80", opened_at=DAY, updated_at=DAY,
    )


def test_schema_version_wal_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    with Ledger.open(path) as ledger:  # reopening does not migrate twice
        assert ledger._writer.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert ledger.channels() == []


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LedgerVersionError):
        Ledger.open(path)


def test_channel_payment_updates_total_account_and_refuses_replays(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ch = channel()
        ledger.add_channel(ch)
        with pytest.raises(LedgerError):
            ledger.add_channel(ch)
        ledger.record_payment(peer=PEER, direction="in", kind="get", chunk="01" * 32, price=10, amount=0, now=DAY)
        ledger.record_payment(peer=PEER, direction="in", kind="get", chunk="02" * 32, price=10, amount=10,
                              channel_id=ch.channel_id, total=10, payer_sig=b"sig1", now=DAY)
        for stale in (10, 5):
            with pytest.raises(StaleTotal):
                ledger.record_payment(peer=PEER, direction="in", kind="get", chunk="03" * 32, price=10, amount=10,
                                      channel_id=ch.channel_id, total=stale, payer_sig=b"x", now=DAY)
        with pytest.raises(UnknownChannel):
            ledger.record_payment(peer=PEER, direction="in", kind="get", chunk="03" * 32, price=10, amount=10,
                                  channel_id="00" * 32 + ":1", total=20, now=DAY)
        with pytest.raises(LedgerError):  # money without a channel
            ledger.record_payment(peer=PEER, direction="in", kind="get", chunk="03" * 32, price=10, amount=10)
        stored = ledger.channel(ch.channel_id)
        assert stored is not None and stored.total == 10 and stored.payer_sig == b"sig1"
        account = ledger.account(PEER, "in")
        assert (account.consumed, account.paid, account.last_chunk) == (20, 10, "02" * 32)
        assert len(ledger.payments(peer=PEER)) == 2  # the refused ones left nothing


def test_chained_records_stop_a_peer_at_its_first_refused_record(tmp_path: Path) -> None:
    """The payee's grouped records (specs/payments.md §Ledger, "Grouped host commits"): a record of a
    peer after a refused one of the same peer is refused unwritten; another peer's go on."""
    other = "bb" * 20
    with Ledger.open(tmp_path / "l.db") as ledger:
        mine, theirs = channel(), channel("ee" * 32 + ":0", peer=other)
        ledger.add_channel(mine)
        ledger.add_channel(theirs)

        def paid(peer: str, cid: str, chunk: int, total: int) -> PaymentEntry:
            return PaymentEntry(peer=peer, direction=Direction.IN, kind=Kind.GET, chunk="%064x" % chunk, price=10,
                                amount=10, channel_id=cid, total=total, payer_sig=b"s", now=DAY)

        group = [paid(PEER, mine.channel_id, 1, 10), paid(PEER, mine.channel_id, 2, 10),  # a replay: refused
                 paid(other, theirs.channel_id, 3, 10), paid(PEER, mine.channel_id, 4, 20),
                 paid(other, theirs.channel_id, 5, 20)]
        results = ledger.record_payments(group, chained=True)
        assert [type(r).__name__ for r in results] == [
            "PaymentRecord", "StaleTotal", "PaymentRecord", "LedgerError", "PaymentRecord"]
        assert [p.chunk for p in ledger.payments(peer=PEER)] == ["%064x" % 1]
        assert ledger.channel(mine.channel_id).total == 10  # type: ignore[union-attr]
        assert ledger.channel(theirs.channel_id).total == 20  # type: ignore[union-attr]
        # Unchained, the later record of the same peer is written (the payer's own records).
        results = ledger.record_payments([paid(PEER, mine.channel_id, 6, 10), paid(PEER, mine.channel_id, 7, 30)])
        assert isinstance(results[0], StaleTotal) and not isinstance(results[1], Exception)


def test_earnings_per_peer_and_day_and_settlements(tmp_path: Path) -> None:
    other = "bb" * 20
    with Ledger.open(tmp_path / "l.db") as ledger:
        a, b = channel("11" * 32 + ":0"), channel("22" * 32 + ":1", peer=other)
        ledger.add_channel(a)
        ledger.add_channel(b)
        ledger.record_payment(peer=PEER, direction="in", kind="get", chunk="01" * 32, price=7, amount=7,
                              channel_id=a.channel_id, total=7, now=DAY)
        ledger.record_payment(peer=other, direction="in", kind="put", chunk="02" * 32, price=5, amount=5,
                              channel_id=b.channel_id, total=5, now=DAY + 86_400)
        ledger.set_channel_state(a.channel_id, "closed")
        ledger.record_settlement(channel_id=a.channel_id, kind="close", txid="cc" * 32, amount=7)
        assert ledger.earnings()["settled"] == 0  # not confirmed yet
        ledger.record_settlement(channel_id=a.channel_id, kind="close", txid="cc" * 32, amount=7,
                                 state="confirmed", height=120)
        report = ledger.earnings()
        assert (report["earned"], report["pending"], report["settled"]) == (12, 5, 7)
        assert report["per_peer"][PEER] == {"earned": 7, "pending": 0, "settled": 7, "spent": 0}
        assert report["per_day"] == {"2026-09-21": 7, "2026-09-22": 5}
        dump = ledger.export()
        assert [s["height"] for s in dump["settlements"]] == [120]
        assert {p["amount"] for p in dump["payments"]} == {5, 7}
        with pytest.raises(UnknownChannel):
            ledger.set_channel_state("nope", "closed")


def test_earnings_report_the_service_balance_with_each_peer(tmp_path: Path) -> None:
    other = "bb" * 20
    with Ledger.open(tmp_path / "l.db") as ledger:
        theirs, mine = channel("11" * 32 + ":0"), channel("22" * 32 + ":1", role="payer")
        ledger.add_channel(theirs)
        ledger.add_channel(mine)
        # PEER took 900 of service from us and paid 400; we took 300 from it and paid 100; OTHER only served us.
        ledger.record_payment(peer=PEER, direction="in", kind="get", chunk="01" * 32, price=500, amount=0, now=DAY)
        ledger.record_payment(peer=PEER, direction="in", kind="put", chunk="02" * 32, price=400, amount=400,
                              channel_id=theirs.channel_id, total=400, now=DAY)
        ledger.record_payment(peer=PEER, direction="out", kind="get", chunk="03" * 32, price=300, amount=100,
                              channel_id=mine.channel_id, total=100, now=DAY)
        ledger.record_payment(peer=other, direction="out", kind="get", chunk="04" * 32, price=70, amount=0, now=DAY)
        balances = ledger.earnings()["balances"]
    assert balances["per_peer"][PEER] == {"given": 900, "taken": 300, "paid_in": 400, "paid_out": 100, "net": 300}
    assert balances["per_peer"][other] == {"given": 0, "taken": 70, "paid_in": 0, "paid_out": 0, "net": -70}
    assert {k: v for k, v in balances.items() if k != "per_peer"} == {
        "given": 900, "taken": 370, "paid_in": 400, "paid_out": 100, "net": 230}


def test_group_commit_folds_concurrent_writes(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        ch = channel()
        ledger.add_channel(ch)
        before = ledger.commits
        errors: list[BaseException] = []

        def writer(n: int) -> None:
            try:
                for i in range(50):
                    ledger.record_payment(peer=f"{n:040x}", direction="in", kind="get", chunk=f"{i:064x}",
                                          price=1, amount=0)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(ledger.payments()) == 400
        assert ledger.commits - before < 400  # several writes per fsync


async def test_usable_from_trio_threads(tmp_path: Path) -> None:
    ledger = await trio.to_thread.run_sync(Ledger.open, tmp_path / "l.db")
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(lambda i=i: trio.to_thread.run_sync(
                lambda: ledger.record_payment(peer=PEER, direction="out", kind="get", chunk=f"{i:064x}",
                                              price=3, amount=0)))
    assert ledger.account(PEER, "out").consumed == 60
    ledger.close()


WRITER = """
import sys
from node.ledger import Ledger, ChannelRecord
ledger = Ledger.open(sys.argv[1])
ledger.add_channel(ChannelRecord(channel_id="c", role="payee", peer="p", state="open", capacity=10**9, total=0,
    payer_sig=None, funding_txid="t", funding_vout=0, expiry=1, params=b"", opened_at=0.0, updated_at=0.0))
total = 0
while True:
    total += 1
    ledger.record_payment(peer="p", direction="in", kind="get", chunk="%064x" % total, price=1, amount=1,
                          channel_id="c", total=total)
    print(total, flush=True)
"""


def test_acknowledged_payments_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert proc.stdout is not None
    acknowledged = 0
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 200:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Ledger.open(path) as ledger:
        stored = ledger.channel("c")
        assert stored is not None and stored.total >= acknowledged
        assert len(ledger.payments(channel_id="c")) == stored.total


def payer_channel_paid_three_times(ledger: Ledger) -> ChannelRecord:
    """A payer channel with three payments of 10 sats (totals 10, 20, 30)."""
    ch = channel(role="payer")
    ledger.add_channel(ch)
    for n, total in enumerate((10, 20, 30), start=1):
        ledger.record_payment(peer=PEER, direction="out", kind="get", chunk=f"{n:02x}" * 32, price=10, amount=10,
                              channel_id=ch.channel_id, total=total, payer_sig=f"sig{total}".encode(), now=DAY)
    return ch


def test_taking_back_unrecorded_payments_keeps_the_channel_open(tmp_path: Path) -> None:
    """specs/payments.md §After a crash: a new session's CHANNEL_STATE below our total; the rows above it go."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        ch = payer_channel_paid_three_times(ledger)
        assert ledger.take_back_unrecorded(ch.channel_id, recorded=10, now=DAY) == 20
        stored = ledger.channel(ch.channel_id)
        assert stored is not None and (stored.state, stored.total, stored.payer_sig) == ("open", 10, None)
        assert [p.total for p in ledger.payments(channel_id=ch.channel_id)] == [10]
        assert ledger.earnings()["spent"] == 10
        # The next payment signs 20 again: a new row, not a stale total.
        ledger.record_payment(peer=PEER, direction="out", kind="get", chunk="04" * 32, price=10, amount=10,
                              channel_id=ch.channel_id, total=20, payer_sig=b"sig20", now=DAY)
        assert ledger.earnings()["spent"] == 20 and ledger.account(PEER, "out").paid == 20


def test_abandoning_a_payer_channel_takes_back_the_refused_payments_only(tmp_path: Path) -> None:
    """specs/payments.md §Channel recovery: rows above the payee's total go, with their price and amount."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        ch = payer_channel_paid_three_times(ledger)
        assert ledger.abandon_payer_channel(ch.channel_id, acknowledged=20, now=DAY) == 10
        stored = ledger.channel(ch.channel_id)
        assert stored is not None and (stored.state, stored.total, stored.payer_sig) == ("closing", 20, None)
        assert [p.total for p in ledger.payments(channel_id=ch.channel_id)] == [10, 20]
        account = ledger.account(PEER, "out")
        assert (account.consumed, account.paid) == (20, 20)
        assert ledger.earnings()["spent"] == 20
        # Nothing above the payee's total: nothing taken back; a closed row stays closed.
        ledger.set_channel_state(ch.channel_id, "closed")
        assert ledger.abandon_payer_channel(ch.channel_id, acknowledged=20, now=DAY) == 0
        stored = ledger.channel(ch.channel_id)
        assert stored is not None and stored.state == "closed" and stored.total == 20
        with pytest.raises(UnknownChannel):
            ledger.abandon_payer_channel("00" * 32 + ":1", acknowledged=0)
        ledger.add_channel(channel("ee" * 32 + ":0"))  # a payee channel is not ours to give up
        with pytest.raises(UnknownChannel):
            ledger.abandon_payer_channel("ee" * 32 + ":0", acknowledged=0)
