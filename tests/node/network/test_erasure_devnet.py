"""A 4-of-8 file on a devnet of real node processes (issue 19, "Must hold"): it outlives its owner and
any 4 of a stripe's hosts; with 5 gone, ``mu files get`` exits 2 naming the stripe short of shares."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from node.api.control import ControlClient
from node.store import STORE_DIR
from protocol.erasure import StripeMap
from tests.node.network.test_devnet import REPO_ROOT, start_devnet

KIB = 1 << 10


def chunk_file(data_dir: str, address_hex: str) -> Path:
    """Where a node keeps a chunk (specs/chunks.md §8.1)."""
    return Path(data_dir) / STORE_DIR / address_hex[:2] / address_hex


def mu_get(data_dir: str, link: str, stripes: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "--data-dir", data_dir, "files", "get", link,
                           "--stripes", stripes, "-o", str(out)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_four_of_eight_survives_four_dead_hosts_and_names_the_stripe_at_five(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(1536 * KIB))
    monkeypatch.setenv("MU_AUDIT_PERIOD", "1e9")  # the upkeep timer stays out of this test (its nodes inherit it)
    proc, summary = start_devnet(tmp_path, 10)
    try:
        nodes = summary["nodes"]
        owner, reader = nodes[0], nodes[-1]
        by_id = {n["node_id"]: n for n in nodes}

        async def add() -> dict:
            return await ControlClient.from_data_dir(Path(owner["data_dir"])).run_stream(
                "add", {"path": str(src), "k": 4, "n": 8}, lambda e: None)

        added = trio.run(add)
        assert added["short_stripes"] == [] and added["stripe_count"] >= 1
        stripe_map = StripeMap.parse(chunk_file(owner["data_dir"], added["stripes"]).read_bytes())
        for stripe, hosts in zip(stripe_map.stripes, added["hosts"]):
            # 8 distinct hosts per stripe, but for the zero blocks completing the last: stored nowhere (§3)
            padding = stripe.padding(4)
            assert len(set(hosts) - {""}) == 8 - len(padding) and owner["node_id"] not in hosts
            assert all(hosts[i] == "" for i in padding)
            assert not any(chunk_file(n["data_dir"], stripe.shares[i].hex()).exists() for n in nodes for i in padding)
        os.kill(owner["pid"], signal.SIGKILL)  # the file must outlive the node that added it
        # Any 4 hosts of stripe 0 may go; a fifth leaves it 3 shares, counting its zero blocks.
        doomed = [h for h in added["hosts"][0] if h and h != reader["node_id"]][:5]
        for host in doomed[:4]:
            os.kill(by_id[host]["pid"], signal.SIGKILL)
        out = tmp_path / "four-dead.bin"
        got = mu_get(reader["data_dir"], added["link"], added["stripes"], out)
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == src.read_bytes()

        os.kill(by_id[doomed[4]]["pid"], signal.SIGKILL)
        failed = mu_get(reader["data_dir"], added["link"], added["stripes"], tmp_path / "five-dead.bin")
        assert failed.returncode == 2, failed.stderr
        assert "not enough shares" in failed.stderr and "stripe 0 (" in failed.stderr
        assert not (tmp_path / "five-dead.bin").exists()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
