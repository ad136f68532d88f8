"""``scripts/bench --quick`` runs end to end and reports every figure (speed is judged by the benchmark, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_bench_quick_runs_and_reports(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/bench_files.py", "--quick", "--json", "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("limit_mib_s", "disk_mib_s", "add_mib_s", "get_mib_s"):
        assert figures[name] > 0
    assert "x limit" in proc.stdout and "peak RSS" in proc.stdout
    # Memory is flat: the 32 MiB file does not cost 32 MiB more than the 4 MiB one.
    assert figures["rss_add_32mib"] - figures["rss_add_4mib"] < 24
    assert figures["rss_get_32mib"] - figures["rss_get_4mib"] < 24
    assert not any(tmp_path.iterdir())  # the benchmark cleans up after itself
