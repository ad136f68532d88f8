"""scripts/bench-payments --quick runs and prints both rates (speed itself is not asserted)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_payments_quick_runs() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bench-payments"), "--quick", "--payments", "40", "--runs", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rates = dict(re.findall(r"^(raw coincurve ECDSA verifies/s|payments verified/s)\s*:\s*([\d,]+)", out, re.M))
    assert set(rates) == {"raw coincurve ECDSA verifies/s", "payments verified/s"}
    assert all(int(v.replace(",", "")) > 0 for v in rates.values())
    assert "ratio payments / raw verifies" in out
