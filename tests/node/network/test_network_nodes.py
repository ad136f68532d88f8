"""Ten nodes on loopback: add and replicate on one, fetch by root on another (specs/network.md §3, §7).

The nodes are real transports and DHT nodes on loopback sockets in one trio
run (tests/helpers/network.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node.files.fetcher import fetch_file
from node.files.local import add_file
from node.files.locate import DhtResolver
from node.files.uploader import replicate_file
from protocol.fetch import placement
from tests.helpers.network import collect, network

MIB = 1 << 20
CHUNK = 256 * 1024


@pytest.mark.slow
async def test_ten_nodes_add_replicate_fetch(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(6 * MIB + 321))
    async with network(tmp_path, 10) as nodes:
        uploader, fetcher = nodes[0], nodes[7]
        link = add_file(uploader.store, src, chunk_size=CHUNK).link
        placed = []
        report = await replicate_file(link, uploader.store, uploader.dialer(), on_chunk=collect(placed))
        assert report.chunks == len(uploader.store) == len(placed)
        assert report.under_replicated == 0
        assert report.replicas_confirmed == 3 * report.chunks
        assert report.announced_to > 0
        others = [n.identity.node_id for n in nodes[1:]]
        by_id = {n.identity.node_id: n for n in nodes}
        for p in placed:  # each chunk is on exactly its 3 XOR-closest other nodes
            assert list(p.replicas) == placement(p.address, others, 3)
            assert all(by_id[h].store.has(p.address) for h in p.replicas)

        out = tmp_path / "fetched.bin"
        resolver = DhtResolver(fetcher.dialer(), link.root)
        result = await fetch_file(link, out, [], max_price_per_mib=0, resolver=resolver, store=fetcher.store)
        assert out.read_bytes() == src.read_bytes()
        assert result.progress.chunks.chunks_done + result.progress.local_chunks == report.chunks


@pytest.mark.slow
async def test_fetch_survives_a_dead_replica_and_dead_uploader(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(2 * MIB))
    # The DHT timeout bounds the wait on the two dead nodes; at 0.5 s a live
    # node on a loaded machine (the six nodes share this test's event loop)
    # sometimes missed it too, and the fetch ran out of hosts.
    async with network(tmp_path, 6, dht_timeout=1.0) as nodes:
        uploader = nodes[0]
        link = add_file(uploader.store, src, chunk_size=CHUNK).link
        placed = []
        await replicate_file(link, uploader.store, uploader.dialer(), on_chunk=collect(placed))
        # kill the closest holder of the root chunk, and the uploader (a provider of everything)
        root_holders = next(p.replicas for p in placed if p.address == link.root)
        victim = next(n for n in nodes if n.identity.node_id == root_holders[0])
        victim.scope.cancel()
        uploader.scope.cancel()
        fetcher = next(n for n in nodes[1:] if n is not victim)
        out = tmp_path / "fetched.bin"
        with trio.fail_after(120):
            await fetch_file(link, out, [], max_price_per_mib=0, request_timeout=5.0,
                             resolver=DhtResolver(fetcher.dialer(), link.root))
        assert out.read_bytes() == src.read_bytes()
