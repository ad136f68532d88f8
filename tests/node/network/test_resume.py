"""Resumable download state (specs/network.md §5): real files, a real kill -9."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.resume import (
    CHECKPOINT_CHUNKS,
    PART_SUFFIX,
    STATE_SUFFIX,
    PartialDownload,
    ResumeError,
    decode_state,
    encode_state,
)

JOB = hashlib.sha256(b"job").digest()
SIZE = 100


def piece(i: int) -> bytes:
    return hashlib.sha256(b"%d" % i).digest()[:SIZE // 4] * 4


def test_state_round_trip_and_rejects() -> None:
    data = encode_state(JOB, 10, b"\xff\xc0")
    assert decode_state(data) == (JOB, 10, b"\xff\xc0")
    assert decode_state(data[:-1]) is None
    flipped = bytearray(data)
    flipped[40] ^= 1
    assert decode_state(bytes(flipped)) is None
    assert decode_state(b"") is None
    with pytest.raises(ResumeError):
        encode_state(JOB, 10, b"\xff")
    # bits past the last chunk set: rejected even with a valid digest
    body = data[:-32-2] + b"\xff\xff"
    assert decode_state(body + hashlib.sha256(body).digest()) is None


def test_out_of_order_writes_resume_and_finish(tmp_path: Path) -> None:
    out = tmp_path / "file.bin"
    n = 10
    dl = PartialDownload.open(out, JOB, n)
    for i in (9, 3, 0, 5):
        dl.write_chunk(i, i * SIZE, piece(i))
    dl.close()
    assert not out.exists()
    dl = PartialDownload.open(out, JOB, n)
    assert dl.resumed == 4
    assert dl.missing() == [1, 2, 4, 6, 7, 8]
    assert dl.is_done(9) and not dl.is_done(1)
    with pytest.raises(ResumeError):
        dl.finish(n * SIZE)
    for i in dl.missing():
        dl.write_chunk(i, i * SIZE, piece(i))
    assert dl.finish(n * SIZE - 7) == out
    assert out.read_bytes() == b"".join(piece(i) for i in range(n))[:-7]
    assert not (tmp_path / ("file.bin" + PART_SUFFIX)).exists()
    assert not (tmp_path / ("file.bin" + STATE_SUFFIX)).exists()


def test_other_job_or_corrupt_state_starts_over(tmp_path: Path) -> None:
    out = tmp_path / "f"
    dl = PartialDownload.open(out, JOB, 4)
    dl.write_chunk(0, 0, piece(0))
    dl.close()
    other = PartialDownload.open(out, hashlib.sha256(b"other").digest(), 4)
    assert other.resumed == 0 and other.missing() == [0, 1, 2, 3]
    other.close()
    state = tmp_path / ("f" + STATE_SUFFIX)
    state.write_bytes(b"garbage")
    assert PartialDownload.open(out, JOB, 4).resumed == 0


def test_index_bounds(tmp_path: Path) -> None:
    dl = PartialDownload.open(tmp_path / "f", JOB, 2)
    with pytest.raises(ResumeError):
        dl.write_chunk(2, 0, b"x")
    with pytest.raises(ResumeError):
        PartialDownload.open(tmp_path / "g", b"short", 2)


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(list(range(12))), stop=st.integers(0, 12), tail=st.integers(0, SIZE - 1))
def test_any_order_any_interruption(tmp_path_factory: pytest.TempPathFactory, order: list[int], stop: int,
                                    tail: int) -> None:
    out = tmp_path_factory.mktemp("r") / "out"
    dl = PartialDownload.open(out, JOB, 12)
    for i in order[:stop]:
        dl.write_chunk(i, i * SIZE, piece(i))
    dl.close()
    dl = PartialDownload.open(out, JOB, 12)
    assert sorted(dl.missing()) == sorted(order[stop:])
    for i in dl.missing():
        dl.write_chunk(i, i * SIZE, piece(i))
    dl.finish(12 * SIZE - tail)
    assert out.read_bytes() == b"".join(piece(i) for i in range(12))[:12 * SIZE - tail]


def test_kill_9_loses_only_unchecked_chunks(tmp_path: Path) -> None:
    """A writer killed mid-download: every chunk the state file marks done is intact."""
    out = tmp_path / "big"
    n = CHECKPOINT_CHUNKS * 4
    script = textwrap.dedent(f"""
        import hashlib, sys
        from pathlib import Path
        from node.resume import PartialDownload
        dl = PartialDownload.open(Path({str(out)!r}), bytes.fromhex({JOB.hex()!r}), {n})
        for i in range({n}):
            dl.write_chunk(i, i * {SIZE}, (hashlib.sha256(b"%d" % i).digest()[:{SIZE // 4}]) * 4)
            if i == {CHECKPOINT_CHUNKS * 2 + 5}:
                print("ready", flush=True)
                sys.stdin.readline()  # parent kills us here
    """)
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    dl = PartialDownload.open(out, JOB, n)
    assert dl.resumed == CHECKPOINT_CHUNKS * 2  # two checkpoints, nothing after them counted
    with open(dl.part_path, "rb") as f:
        for i in range(n):
            if dl.is_done(i):
                f.seek(i * SIZE)
                assert f.read(SIZE) == piece(i)
    for i in dl.missing():
        dl.write_chunk(i, i * SIZE, piece(i))
    dl.finish(n * SIZE)
    assert out.read_bytes() == b"".join(piece(i) for i in range(n))
