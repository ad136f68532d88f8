"""tune_allocator: chunks received through a session reuse memory instead of faulting in fresh pages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# In a fresh process: 128 GETs of 1 MiB chunks, four at a time as a fetch
# does, between two Sessions over a socketpair (scripts/bench-transport's
# in-process pair, handshake included), after a warm-up; prints the minor
# page faults per chunk.  A fresh MiB costs 256; without the tuning glibc
# here faulted about 90-100 per chunk, with it 2.
RECEIVE_CHUNKS = """
import resource, sys
sys.path.insert(0, "scripts")
from bench_transport import bench_session_pair
from node.transport import tune_allocator

tuned = sys.argv[1] == "tuned" and tune_allocator()
MiB = 1 << 20
bench_session_pair(32 * MiB, MiB, 4)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
bench_session_pair(128 * MiB, MiB, 4)
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 128)
"""


def faults_per_chunk(mode: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", RECEIVE_CHUNKS, mode], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return out[0] == "True", float(out[1])


def test_received_chunks_reuse_memory_once_the_allocator_is_tuned() -> None:
    tuned, faults = faults_per_chunk("tuned")
    if not tuned:
        pytest.skip("not glibc: tune_allocator has nothing to tune")
    assert faults < 16, f"{faults} page faults per 1 MiB chunk"
