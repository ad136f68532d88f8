"""scripts/bench-transport --quick runs end to end and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_transport_quick_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_transport.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rates = dict(re.findall(r"^\s+(.+?)\s+([\d.]+) MiB/s$", out, re.MULTILINE))
    assert len(rates) == 12, out  # ten rows, the reference and the side-by-side line
    assert all(float(rate) > 0 for rate in rates.values())
    # The reference is the AES-GCM of the library the session runs on; the
    # other library's is printed beside it.
    reference = float(next(v for k, v in rates.items() if k.startswith("single-core AES-GCM reference")))
    assert reference == float(rates["AES-256-GCM, cryptography AESGCM (encrypt)"]), out
    assert any(k.startswith("AES-256-GCM, pycryptodome") for k in rates), out
    assert re.search(r"cryptography / pycryptodome AES-GCM encrypt\s+= [\d.]+x", out)
    assert re.search(r"session / AES-GCM .* = [\d.]+x", out)
    # Issue 22: the machine's own loopback limit is measured in the same run
    # and printed beside AES-GCM and the session, with both ratios.
    assert float(rates["raw loopback TCP, plain sockets, 2 processes"]) > 0, out
    assert re.search(r"side by side: AES-GCM \d+ \| raw loopback \d+ \| session \d+ MiB/s", out), out
    assert re.search(r"raw loopback / AES-GCM .* = [\d.]+x", out), out
    assert re.search(r"session / raw loopback\s+= [\d.]+x", out), out
    assert re.search(r"peak RSS: client \d+ MiB, server \d+ MiB", out)
    # The session's own overhead, both ends in one process, beside AES-GCM
    # sealing and opening on one core: MiB/s and MiB per CPU-second, each with its ratio.
    own = re.findall(r"^ +(AES-256-GCM seal \+ open|wire Connection pair|Session pair)\D.*?"
                     r"([\d.]+) +([\d.]+)x +([\d.]+) +([\d.]+)x$", out, re.MULTILINE)
    assert [row[0] for row in own] == ["AES-256-GCM seal + open", "wire Connection pair", "Session pair"], out
    assert own[0][2] == own[0][4] == "1.00" and all(float(row[1]) > 0 and float(row[3]) > 0 for row in own), out
    # Beside them, what the passes no session code can skip allow, measured in the same run.
    assert re.search(r"bound with no Python at all: Connection pair [\d.]+x .*Session pair [\d.]+x", out), out
    assert re.search(r"session page faults per chunk: client \d+, server \d+", out), out
