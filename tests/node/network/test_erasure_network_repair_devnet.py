"""Repair from the network on a devnet of real node processes (issue 19, specs/erasure.md §8 Repair): the
owner drops its own copies of the file's chunks, 3 hosts vanish, and an upkeep round still restores 8 live
shares per stripe, rebuilt from k shares fetched (paid) from the live hosts; the next round's audits,
checked against shares rebuilt the same way, all pass, and the ledgers agree to the sat."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from node.store import STORE_DIR
from protocol.erasure import StripeMap
from tests.helpers.erasure import owner_call
from tests.helpers.ledgers import assert_paid_equals_earned, earnings
from tests.node.network.test_devnet import start_devnet

KIB = 1 << 10


@pytest.mark.slow
def test_an_owner_without_its_chunks_repairs_from_k_shares_on_the_network(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(1536 * KIB))
    monkeypatch.setenv("MU_AUDIT_PERIOD", "1e9")  # the upkeep timer stays out of this test (its nodes inherit it)
    proc, summary = start_devnet(tmp_path, 12)  # the owner and 11 hosts: 8 live ones remain
    try:
        nodes = summary["nodes"]
        call = owner_call(nodes[0])
        by_id = {n["node_id"]: n for n in nodes}
        added = call("add", {"path": str(src), "k": 4, "n": 8})
        assert added["short_stripes"] == []
        store = Path(nodes[0]["data_dir"]) / STORE_DIR
        stripe_map = StripeMap.parse((store / added["stripes"][:2] / added["stripes"]).read_bytes())
        dropped = 0
        for stripe in stripe_map.stripes:  # the owner keeps the map, not the file
            for address, _ in stripe.chunks:
                path = store / address.hex()[:2] / address.hex()
                if path.exists():
                    path.unlink()
                    dropped += 1
        assert dropped == sum(len(s.chunks) for s in stripe_map.stripes)
        gone = [h for h in added["hosts"][0] if h][:3]  # "": a zero block completing the stripe, no share (§3)
        for host in gone:
            os.kill(by_id[host]["pid"], signal.SIGKILL)

        repaired = call("repair", {"stripes": added["stripes"]})
        lost = sum(1 for hosts in added["hosts"] for h in hosts if h in gone)
        assert repaired["failed_audits"] == lost >= 3
        assert len(repaired["repaired"]) == lost and repaired["unrepaired"] == []
        assert repaired["alive"] == [8] * added["stripe_count"]
        assert not {r["host"] for r in repaired["repaired"]} & set(gone)

        second = call("repair", {"stripes": added["stripes"]})  # audits against network-rebuilt shares
        assert second["failed_audits"] == 0 and second["repaired"] == [] and second["alive"] == repaired["alive"]
        health = call("health", {"root": added["root"]})["files"][0]
        # The add, the paid audits and PUTs, and the GETs that rebuilt the stripes (k shares per stripe per round).
        assert health["sats_spent"] > added["sats_spent"] + repaired["sats_spent"] + second["sats_spent"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    ledgers = earnings(nodes)
    assert_paid_equals_earned(ledgers)
    owner_id = nodes[0]["node_id"]
    for r in repaired["repaired"]:  # every new host was paid for the share it took
        assert ledgers[r["host"]]["per_peer"][owner_id]["earned"] > 0
