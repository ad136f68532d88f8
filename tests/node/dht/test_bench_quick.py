"""scripts/bench-dht --quick runs and prints every scenario (issue 6: simulation)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "bench_dht.py"


def test_bench_dht_quick_runs() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = re.findall(r"^\s+(\d+)%\s+([\d.]+)%", out.stdout, re.M)
    assert [r[0] for r in rows] == ["0", "10", "30"]
    assert float(rows[0][1]) == 100.0 and float(rows[2][1]) >= 99.0
    assert "reference: brute-force" in out.stdout
