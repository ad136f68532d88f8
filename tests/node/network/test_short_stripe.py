"""The last stripe of a file with fewer than k chunks (specs/erasure.md §3, §5, §6): its zero blocks are
no shares. They get no host and are stored nowhere; a reader takes them as they are. So the stripe's
other shares, each on its own host, are all there is to lose: any n - k of them may go.

Real nodes on loopback sockets in one trio run (tests/helpers/network.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from node.files.audit import ErasureBook, FileRecord, ShareAudit

from node.files.local import add_file
from node.files.locate import free_source
from node.files.stripes import fetch_striped, store_striped
from node.files.upkeep import UpkeepConfig, UpkeepTimer
from protocol.erasure import NotEnoughShares, StripeMap, share_address
from tests.helpers.network import network

KIB = 1 << 10


@pytest.mark.slow
async def test_a_short_stripe_stores_no_zero_block_and_outlives_any_n_minus_k_of_its_hosts(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(100 * KIB))  # one data chunk and the root: a stripe of 2 chunks
    async with network(tmp_path, 8) as nodes:
        owner, reader = nodes[0], nodes[-1]
        link = add_file(owner.store, src, chunk_size=256 * KIB).link
        report = await store_striped(link, owner.store, owner.dialer(), k=4, n=8)
        stripe = StripeMap.parse(owner.store.get(report.map_address)).stripes[0]
        assert report.stripes == 1 and len(stripe.chunks) == 2
        assert report.padding == {(0, 2), (0, 3)} and report.short_stripes == ()
        hosts = report.hosts[0]
        assert hosts[2] == hosts[3] == b""
        placed = [h for h in hosts if h]
        assert len(set(placed)) == 6 and owner.identity.node_id not in placed
        zero = share_address(bytes(stripe.block_size))
        assert stripe.shares[2] == stripe.shares[3] == zero
        assert not any(node.store.has(zero) for node in nodes)  # the zero blocks are stored nowhere

        by_id = {node.identity.node_id: node for node in nodes}
        doomed = [h for h in placed if h != reader.identity.node_id]
        owner.scope.cancel()  # the owner keeps the chunks: it must not be the one to answer
        for host in doomed[:4]:  # 2 of 6 shares left, and the 2 zero blocks: k = 4
            by_id[host].scope.cancel()
        out = tmp_path / "four-dead.bin"
        with trio.fail_after(60):
            got = await fetch_striped(link, report.map_address, out, reader.dialer(), make_source=free_source,
                                      store=reader.store)
        assert out.read_bytes() == src.read_bytes()
        assert got.shares_fetched + got.local_shares <= 3  # the map and 2 shares: no zero block asked for

        by_id[doomed[4]].scope.cancel()
        with trio.fail_after(60), pytest.raises(NotEnoughShares, match=r"stripe 0 \(3 of 4 shares needed\)"):
            await fetch_striped(link, report.map_address, tmp_path / "five-dead.bin", reader.dialer(),
                                make_source=free_source, store=reader.store)


def test_the_book_keeps_which_indices_are_zero_blocks_and_never_counts_them_missing(tmp_path: Path) -> None:
    hosts = tuple(bytes([h]) * 20 for h in range(10, 18))
    short = (hosts[0], hosts[1], b"", b"", *hosts[4:])  # 2 chunks: indices 2, 3 are zero blocks
    book = ErasureBook(tmp_path)
    record = FileRecord(map_address=b"\x01" * 32, root=b"\x02" * 32, hosts=(hosts, short),
                        padding=frozenset({(1, 2), (1, 3)}))
    book.save(record)
    assert book.load(record.map_address) == record
    assert record.missing(set()) == set()
    assert record.missing({hosts[5]}) == {(0, 5), (1, 5)}
    assert record.alive({hosts[5]}) == [7, 7]  # a reader counts on the zero blocks
    unplaced = FileRecord(map_address=b"\x03" * 32, root=b"\x02" * 32, hosts=(short,))
    assert unplaced.missing(set()) == {(0, 2), (0, 3)}  # without padding, "" is a share that found no host

    # A record written before the padding was kept: none, so every index is a share.
    raw = json.loads((book.dir / f"{record.map_address.hex()}.json").read_text())
    del raw["padding"]
    (book.dir / f"{record.map_address.hex()}.json").write_text(json.dumps(raw))
    assert book.load(record.map_address) == dataclasses.replace(record, padding=frozenset())


async def test_the_upkeep_timer_does_not_repair_a_file_for_its_zero_blocks(tmp_path: Path,
                                                                           autojump_clock: trio.testing.MockClock) -> None:
    hosts = tuple(bytes([h]) * 20 for h in range(10, 18))
    book = ErasureBook(tmp_path)
    book.save(FileRecord(map_address=b"\x01" * 32, root=b"\x02" * 32, hosts=((hosts[0], hosts[1], b"", b"",
                                                                                *hosts[4:]),),
                         padding=frozenset({(0, 2), (0, 3)}), retained_until=2**40))
    audited = trio.Event()

    class Auditor:
        def __init__(self) -> None:
            self.book = book

        def audited_shares(self) -> list[tuple[bytes, int, int]]:
            return [(b"\x01" * 32, 0, i) for i in (0, 1, 4, 5, 6, 7)]

        async def audit_one(self, map_address: bytes, stripe: int, share: int) -> ShareAudit:
            audited.set()
            return ShareAudit(stripe=stripe, share=share, host=hosts[share], passed=True, reason="", score=100)

    repaired: list[bytes] = []

    async def repair(map_address: bytes) -> None:
        repaired.append(map_address)

    timer = UpkeepTimer(Auditor(), UpkeepConfig(audit_period=80.0), repair=repair,  # type: ignore[arg-type]
                        renew=None, wall_clock=lambda: 1_000_000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.serve)
        await audited.wait()  # the periodic look runs first, then the first audit
        nursery.cancel_scope.cancel()
    assert repaired == []
