"""scripts/bench-network --quick runs end to end and reports what it measures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_bench_network_quick() -> None:
    res = subprocess.run([sys.executable, "scripts/bench_network.py", "--quick"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for label in ("plain TCP", "mu, 1 host", "mu, 3 hosts", "3 hosts / 1 host", "time to first byte", "fetcher peak RSS"):
        assert label in out, out
    assert "MiB/s" in out and "x plain TCP" in out
