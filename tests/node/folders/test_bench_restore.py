"""scripts/bench-restore runs end to end on a small folder and reports what it measures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_bench_restore_small(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "scripts/bench_restore.py", "--mib", "12", "--runs", "1", "--dir",
                          str(tmp_path), "--small-files", "30"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=500)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "12 MiB as a 3-file folder and as one file" in out, out
    assert re.search(r"mu folder restore\s+[\d.]+ MiB/s\s+GETs refused 0\n", out), out  # priced by size: none
    assert re.search(r"mu get\s+[\d.]+ MiB/s", out) and re.search(r"restore / get\s+[\d.]+x", out), out
    assert re.search(r"mu folder restore of 30 files of 4096 bytes: [\d.]+ s, [\d.]+ ms per file\n", out), out
    assert list(tmp_path.iterdir()) == []  # its runs clean up after themselves
