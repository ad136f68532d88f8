"""A paid fetch of 64+ chunks on a devnet of real `mu node` processes makes a few DHT lookups, not one per chunk.

Issue 22 (take the waits out of the fetch path), specs/network.md §3 Placement
(Resolving placement from a view): the `get` and `add` results count their DHT
searches (`dht_lookups`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node.api.control import ControlClient
from tests.node.network.test_devnet import start_devnet, stop_devnet

KIB = 1 << 10
CHUNKS = 160
REPLICAS = 1  # so the fetching node, itself a host, holds about a third of the file, not all of it


@pytest.mark.slow
def test_a_paid_fetch_of_64_plus_chunks_makes_a_few_lookups(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(CHUNKS * 64 * KIB - 1000))
    out = tmp_path / "fetched.bin"
    proc, summary = start_devnet(tmp_path, 4)
    try:
        first, last = (Path(n["data_dir"]) for n in (summary["nodes"][0], summary["nodes"][-1]))

        async def run() -> tuple[dict, dict]:
            added = await ControlClient.from_data_dir(first).run_stream(
                "add", {"path": str(src), "chunk_size": 64 * KIB, "replicas": REPLICAS}, lambda e: None)
            got = await ControlClient.from_data_dir(last).run_stream(
                "get", {"link": added["link"], "output": str(out)}, lambda e: None)
            return added, got

        added, got = trio.run(run)
    finally:
        if proc.poll() is None:
            stop_devnet(proc, summary)
    assert out.read_bytes() == src.read_bytes()
    assert added["under_replicated"] == 0 and added["chunks"] > CHUNKS
    assert added["dht_lookups"] == 1
    assert got["chunks_fetched"] + got["local_chunks"] == added["chunks"]
    assert got["chunks_fetched"] >= 64 and got["sats_spent"] > 0
    assert got["dht_lookups"] <= 2  # the root's view and its providers: not one per chunk
