"""scripts/devnet as a real subprocess: chain up, wallets funded, clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); its state letter is Z
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_devnet_starts_funds_and_stops(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "scripts/devnet.py", "--nodes", "3", "--dir", str(tmp_path), "--json"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the summary is printed once everything is up
        assert line, proc.stderr.read() if proc.stderr else ""
        summary = json.loads(line)
        nodes = summary["nodes"]
        assert len(nodes) == 3
        assert len({n["node_id"] for n in nodes}) == 3
        assert all(n["balance"] == 50 * 100_000_000 for n in nodes)  # one mature regtest coinbase each
        for n in nodes:
            assert (Path(n["data_dir"]) / "identity.key").exists()
        chain_pid = summary["chain"]["pid"]
        assert alive(chain_pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not alive(chain_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
