"""`mu peers`, `mu dht lookup`, and the routing table saved in the data dir."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from node.cli import main
from node.runtime.config import load_identity
from node.dht import TABLE_FILE, load_table, open_dht
from protocol.identity import Identity
from protocol.kademlia import K, distance


async def test_table_is_saved_as_json_and_reused_at_restart(tmp_path: Path) -> None:
    identity = Identity(secrets.token_bytes(32))
    async with AsyncExitStack() as stack:
        others = [await stack.enter_async_context(open_dht(Identity(secrets.token_bytes(32)), loopback_devnet=True)) for _ in range(6)]
        for o in others[1:]:
            await o.bootstrap([("127.0.0.1", others[0].port)])
        async with open_dht(identity, data_dir=tmp_path, loopback_devnet=True) as first:
            await first.bootstrap([("localhost", others[0].port)])
            assert len(first.table) == 6
        doc = json.loads((tmp_path / TABLE_FILE).read_text())
        assert doc["format"] == "mu-dht-table" and doc["node_id"] == identity.node_id.hex()
        assert {c["id"] for c in doc["contacts"]} == {o.node_id.hex() for o in others}
        # Restart: the saved table is enough to look keys up, no bootstrap.
        async with open_dht(identity, data_dir=tmp_path, loopback_devnet=True) as second:
            assert len(second.table) == 6
            key = secrets.token_bytes(20)
            found = await second.lookup(key)
            assert [c.node_id for c in found] == sorted((o.node_id for o in others), key=lambda i: distance(i, key))
    # A table written for another identity is ignored.
    assert load_table(tmp_path, secrets.token_bytes(20)) == []


async def test_mu_dht_lookup_and_mu_peers(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli"
    assert main(["--data-dir", str(data_dir), "init"]) == 0
    assert main(["--data-dir", str(data_dir), "peers"]) == 2  # nothing saved yet
    assert main(["--data-dir", str(data_dir), "dht", "lookup", "zz"]) == 1
    own_id = load_identity(data_dir, create=False).node_id
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(open_dht(Identity(secrets.token_bytes(32)), loopback_devnet=True)) for _ in range(8)]
        for n in nodes[1:]:
            await n.bootstrap([("127.0.0.1", nodes[0].port)])
        key = secrets.token_bytes(20)
        result = await trio.run_process(
            [sys.executable, "-m", "node", "--data-dir", str(data_dir), "dht", "lookup", key.hex(),
             "--bootstrap", f"127.0.0.1:{nodes[0].port}", "--json", "--loopback-devnet"],
            capture_stdout=True, capture_stderr=True, check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        closest = json.loads(result.stdout)["closest"]
        assert [c["node_id"] for c in closest] == [
            i.hex() for i in sorted((n.node_id for n in nodes), key=lambda i: distance(i, key))[:K]
        ]
    peers = subprocess.run([sys.executable, "-m", "node", "--data-dir", str(data_dir), "peers", "--json"],
                           capture_output=True, check=True)
    listed = json.loads(peers.stdout)
    assert listed["node_id"] == own_id.hex()
    assert {p["node_id"] for p in listed["peers"]} == {n.node_id.hex() for n in nodes}
