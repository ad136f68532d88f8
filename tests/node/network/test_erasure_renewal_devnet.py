"""Renewal on a devnet of real node processes (issue 19, "Must hold"): with a budget too small the user is
told which file is at risk and nothing is paid; with enough, the shares' retention moves forward, paid."""

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
from tests.node.network.test_devnet import REPO_ROOT, start_devnet

KIB = 1 << 10


def mu(data_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "--data-dir", data_dir, "files", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_renewal_within_budget_and_files_at_risk_over_it(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(512 * KIB))
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

        rich = mu(owner_dir, "renew", "--max-spend-per-month", "10000000", "--within", within)
        assert rich.returncode == 0, rich.stderr
        assert rich.stdout.startswith("1 files renewed for ")
        after = json.loads(mu(owner_dir, "health", "--json").stdout)["files"][0]
        assert after["retained_until"] > before["retained_until"]
        spent = int(rich.stdout.split(" sats this month")[0].rsplit("(", 1)[1].replace(",", ""))
        assert after["sats_spent"] - before["sats_spent"] == spent <= 10000000
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
