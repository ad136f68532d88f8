"""Renewal on a devnet of real node processes (issue 19, "Must hold"): with a budget too small the user is
told which file is at risk and nothing is paid; with enough, the shares' retention moves forward, paid
(each share's renewal its own charge of kind renew, never a free redelivery of its PUT: specs/erasure.md
§9), and the ledgers agree to the sat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from node.api.control import ControlClient
from node.ledger import LEDGER_FILE, Ledger
from node.runtime.settings import DEFAULTS
from protocol.payments import Direction, Kind
from tests.node.network.test_devnet import REPO_ROOT, start_devnet

KIB = 1 << 10
RETENTION = DEFAULTS.retention  # every devnet host's term (the default)


def mu(data_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "--data-dir", data_dir, "files", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_renewal_within_budget_and_files_at_risk_over_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(512 * KIB))
    monkeypatch.setenv("MU_AUDIT_PERIOD", "1e9")  # the upkeep timer stays out of this test (its nodes inherit it)
    proc, summary = start_devnet(tmp_path, 10)
    try:
        owner_dir = summary["nodes"][0]["data_dir"]
        added = trio.run(lambda: ControlClient.from_data_dir(Path(owner_dir)).run_stream(
            "add", {"path": str(src), "k": 4, "n": 8}, lambda e: None))
        before = json.loads(mu(owner_dir, "health", "--json").stdout)["files"][0]
        assert before["retained_until"] is not None
        lapse_in = before["retained_until"] - int(time.time())
        within = str(lapse_in + 3600)  # the retention ends within the window: the file is due

        poor = mu(owner_dir, "renew", "--max-spend-per-month", "1", "--within", within)
        assert poor.returncode == 1
        assert f"at risk (its renewal is over the budget, or a host is gone): {added['root']}" in poor.stderr
        assert poor.stdout.startswith("0 files renewed for 0 sats (0 sats this month)")
        assert json.loads(mu(owner_dir, "health", "--json").stdout)["files"][0] == before

        renew_from = int(time.time())
        rich = mu(owner_dir, "renew", "--max-spend-per-month", "10000000", "--within", within)
        renew_to = int(time.time())
        assert rich.returncode == 0, rich.stderr
        assert rich.stdout.startswith("1 files renewed for ")
        after = json.loads(mu(owner_dir, "health", "--json").stdout)["files"][0]
        # The shares are paid for a host's term from the renewal on. With the CLI this quick the renewal can
        # fall in the add's second, so "moved forward" is stated against the renewal's own clock, not just ">".
        assert renew_from + RETENTION <= after["retained_until"] <= renew_to + RETENTION
        assert after["retained_until"] >= before["retained_until"]
        spent = int(rich.stdout.split(" sats this month")[0].rsplit("(", 1)[1].replace(",", ""))
        assert after["sats_spent"] - before["sats_spent"] == spent <= 10000000
        assert spent > 0  # past the hosts' free allowance (the add's PUTs used it), renewals are paid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    owner_id = summary["nodes"][0]["node_id"]
    with Ledger.open(Path(owner_dir) / LEDGER_FILE) as ledger:
        out = [r for r in ledger.payments() if r.direction is Direction.OUT]
    renewed_hosts = {r.peer for r in out if r.kind is Kind.RENEW}
    # Every host of a share, and nobody for the zero blocks completing the last stripe (specs/erasure.md §3).
    assert len(renewed_hosts) == len({h for hosts in added["hosts"] for h in hosts} - {""}) and sum(r.amount for r in out if r.kind is Kind.RENEW) == spent
    for node in summary["nodes"][1:]:
        with Ledger.open(Path(node["data_dir"]) / LEDGER_FILE) as ledger:
            earned = [r for r in ledger.payments(peer=owner_id) if r.direction is Direction.IN]
        paid_out = [r for r in out if r.peer == node["node_id"]]
        assert sum(r.amount for r in earned) == sum(r.amount for r in paid_out)  # paid == earned, to the sat
        assert (sum(r.amount for r in earned if r.kind is Kind.RENEW)
                == sum(r.amount for r in paid_out if r.kind is Kind.RENEW))
