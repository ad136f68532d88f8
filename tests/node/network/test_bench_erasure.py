"""scripts/bench-erasure --quick runs end to end and reports what it measures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_bench_erasure_quick() -> None:
    res = subprocess.run([sys.executable, "scripts/bench_erasure.py", "--quick"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for label in ("encode", "decode", "zfec raw", "bytes stored per file byte", "4-of-8 2.0", "3 replicas 3.0",
                  "mu get on one 10-node devnet", "replicated (R=3)"):
        assert label in out, out
