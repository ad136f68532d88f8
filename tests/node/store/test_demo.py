"""The one-node walk-through (scripts/demo_local.py) adds, links and reads back a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_demo_round_trips_a_file() -> None:
    proc = subprocess.run([sys.executable, "scripts/demo_local.py"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "link:  mu:" in proc.stdout
    assert "copy identical to the original: True" in proc.stdout
    assert "plaintext visible in the store:  False" in proc.stdout
