"""The payer's journal of payment records (node/exchange/_link.py) when the host's CHANNEL_STATE takes
payments back (specs/payments.md §After a crash): no record above the host's total reaches our ledger
afterwards, and a write under way ends first.  Real SQLite ledger, no network."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from node.exchange._link import PaymentJournal
from node.ledger import ChannelRecord, Ledger, PaymentEntry
from protocol.payments import Direction, Kind

CHANNEL = "ab" * 32 + ":0"
PEER = "cd" * 20


def open_ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    ledger.add_channel(ChannelRecord(channel_id=CHANNEL, role="payer", peer=PEER, state="open",  # type: ignore[arg-type]
                                     capacity=100_000, total=0, payer_sig=None, funding_txid="ab" * 32,
                                     funding_vout=0, expiry=1_000, params=b"", opened_at=0.0, updated_at=0.0))
    return ledger


def entry(total: int) -> PaymentEntry:
    return PaymentEntry(peer=PEER, direction=Direction.OUT, kind=Kind.GET, chunk=f"{total:064x}", price=10,
                        amount=10, channel_id=CHANNEL, total=total, payer_sig=bytes(72))


async def test_records_waiting_above_the_hosts_total_are_dropped_as_done(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as ledger:
        journal = PaymentJournal(ledger)
        kept, refused, later = (journal.add(entry(t)) for t in (10, 20, 30))
        await journal.take_back(CHANNEL, 15)
        assert refused.done.is_set() and later.done.is_set()  # nothing to write: nobody waits for them forever
        assert refused.error is None and later.error is None
        assert not kept.done.is_set()
        await journal.written(kept)
        assert [p.total for p in ledger.payments(channel_id=CHANNEL)] == [10]  # never 20 or 30


async def test_a_write_under_way_ends_before_the_take_back(tmp_path: Path) -> None:
    with open_ledger(tmp_path) as ledger:
        journal = PaymentJournal(ledger)
        record = journal.add(entry(20))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.written, record)
            await trio.testing.wait_all_tasks_blocked()  # the write is in its thread
            await journal.take_back(CHANNEL, 15)
            assert record.done.is_set()  # on disk now: our ledger's take-back that follows removes it
        assert [p.total for p in ledger.payments(channel_id=CHANNEL)] == [20]
