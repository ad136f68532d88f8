"""scripts/bench-exchange --quick runs end to end and prints its comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_bench_exchange_quick() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_exchange.py"), "--quick", "--window", "2",
                             "--json"],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["unpaid_mib_s"] > 0 and report["paid_mib_s"] > 0
    assert report["ratio"] == report["paid_mib_s"] / report["unpaid_mib_s"]
    assert report["chunk_median_ratio"] == report["unpaid_chunk_ms_median"] / report["paid_chunk_ms_median"]
    assert 0 < report["paid_chunk_ms_median"] <= report["paid_chunk_ms_p99"]
    # 40 chunks of 256 KiB at 100 sats/MiB (25 sats each; more chunks than the host redelivers free),
    # twice (warm-up + one run), two requests in flight on both paths: the host's allowance is one
    # chunk's price, the rest is paid.
    assert report["window"] == 2 and report["allowance"] == 25
    assert report["sats_paid"] == 2 * 40 * 25 - 25
    # The paid window keeps what the payer paid for and has not received within one chunk's price.
    assert 0 < report["paid_unreceived_max"] <= 25
    assert report["sha256_mib_s"] > 0 and report["ledger_commits_s"] > 0
    # The same paid host with its ledger in RAM (no flush per paid chunk), where there is a tmpfs.
    if os.access("/dev/shm", os.W_OK):
        assert report["paid_ram_mib_s"] > 0 and report["ram_ratio"] == report["paid_ram_mib_s"] / report["unpaid_mib_s"]
    # CPU per chunk of the host and of the fetcher on each path (from /proc on Linux).
    cpu = report["cpu_ms_per_chunk"]
    assert {"unpaid", "paid"} <= set(cpu)
    if os.path.exists(f"/proc/{os.getpid()}/stat"):
        assert all(c["host"] > 0 and c["fetcher"] > 0 for c in cpu.values())
        # What a payment adds in CPU per chunk, beside the least it can add (two durable commits,
        # sign + verify, a thread hop) from the references of the same run.
        floor = (2 * report["ledger_commit_cpu_ms"] + 1e3 / report["ecdsa_sign_verify_s"]
                 + report["thread_hop_cpu_ms"])
        assert report["ledger_commit_cpu_ms"] > 0 and report["thread_hop_cpu_ms"] > 0
        assert report["least_payment_cpu_ms"] == floor
        paid, unpaid = cpu["paid"], cpu["unpaid"]
        assert report["payment_cpu_ms"] == (paid["host"] + paid["fetcher"]) - (unpaid["host"] + unpaid["fetcher"])
