"""Repair on a devnet of real node processes (issue 19, "Must hold"): after 3 of a stripe's 8 hosts
vanish, one upkeep round (an audit period) restores 8 live shares per stripe on new hosts, paid, and
the ledgers agree to the sat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from node.api.control import ControlClient
from node.ledger import LEDGER_FILE, Ledger
from tests.node.network.test_devnet import REPO_ROOT, start_devnet

KIB = 1 << 10


@pytest.mark.slow
def test_three_hosts_vanish_and_the_owner_restores_eight_shares_paying_new_hosts(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(1024 * KIB))
    proc, summary = start_devnet(tmp_path, 12)  # the owner and 11 hosts: 8 live ones remain
    try:
        nodes = summary["nodes"]
        owner = ControlClient.from_data_dir(Path(nodes[0]["data_dir"]))
        by_id = {n["node_id"]: n for n in nodes}

        async def call(path: str, body: dict) -> dict:
            return await owner.run_stream(path, body, lambda e: None)

        added = trio.run(call, "add", {"path": str(src), "k": 4, "n": 8})
        assert added["short_stripes"] == [] and added["sats_spent"] > 0
        gone = added["hosts"][0][:3]
        for host in gone:
            os.kill(by_id[host]["pid"], signal.SIGKILL)

        repaired = trio.run(call, "repair", {"stripes": added["stripes"]})
        lost = sum(1 for hosts in added["hosts"] for h in hosts if h in gone)
        assert repaired["failed_audits"] == lost >= 3
        assert len(repaired["repaired"]) == lost and repaired["unrepaired"] == []
        assert repaired["alive"] == [8] * added["stripe_count"] and repaired["sats_spent"] > 0
        assert not {r["host"] for r in repaired["repaired"]} & set(gone)

        second = trio.run(call, "repair", {"stripes": added["stripes"]})  # the next audit period: all pass
        assert second["failed_audits"] == 0 and second["repaired"] == [] and second["alive"] == repaired["alive"]

        health = subprocess.run([sys.executable, "-m", "node", "--data-dir", nodes[0]["data_dir"], "files", "health",
                                 added["root"][:12]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, health.stderr
        assert "shares alive per stripe: " + " ".join(["8"] * added["stripe_count"]) in health.stdout
        assert "last audit: never" not in health.stdout
        # Cost so far: the add, then both rounds (each round's audits are paid, specs/erasure.md §7.4).
        cost = added["sats_spent"] + repaired["sats_spent"] + second["sats_spent"]
        assert f"cost so far: {cost:,} sats" in health.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    ledgers = {}
    for n in nodes:
        with Ledger.open(Path(n["data_dir"]) / LEDGER_FILE) as ledger:
            ledgers[n["node_id"]] = ledger.earnings()
    earned = sum(r["earned"] for r in ledgers.values())
    spent = sum(r["spent"] for r in ledgers.values())
    assert earned == spent > 0
    owner_id = nodes[0]["node_id"]
    for peer, row in ledgers[owner_id]["per_peer"].items():
        assert ledgers[peer]["per_peer"][owner_id]["earned"] == row["spent"]
    for r in repaired["repaired"]:  # every new host was paid for the share it took
        assert ledgers[r["host"]]["per_peer"][owner_id]["earned"] > 0
