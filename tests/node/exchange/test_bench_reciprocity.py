"""scripts/bench-reciprocity --quick runs end to end and prints its comparison (specs/payments.md §Service balance)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_bench_reciprocity_quick() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_reciprocity.py"), "--quick", "--runs", "1",
                             "--json"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["reciprocal_mib_s"] > 0 and report["paid_mib_s"] > 0
    assert report["ratio"] == report["reciprocal_mib_s"] / report["paid_mib_s"]
    # 40 chunks of 256 KiB (75 sats each) one way per run, a warm-up and one run; the host's allowance
    # is the window's worth (8 chunks): the rest is paid per chunk.  Equal service both ways pays nothing.
    assert report["paid_sats"] == 2 * 40 * 75 - 8 * 75
    assert report["balance_payments"] == 0 and report["balance_net"] == 0
    assert all(value > 0 for value in report["cpu_s_per_mib"].values())
