"""The fetch's plaintext writer: direct I/O where the file system has it, the same bytes either way."""

from __future__ import annotations

import errno
import os
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from node.files import _output
from node.files._output import ALIGN, PlainWriter

STAGE = 4 * ALIGN  # small, so that a few KiB of pieces fill it many times


def _direct_supported(directory: Path) -> bool:
    probe = directory / "probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_DIRECT))
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def _pieces(total: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out: list[bytes] = []
    while total > 0:
        size = min(total, rng.choice([1, 7, ALIGN - 1, ALIGN, ALIGN + 3, 3 * STAGE + 5, rng.randrange(1, 2 * STAGE)]))
        out.append(rng.randbytes(size))
        total -= size
    return out


def _write(path: Path, pieces: list[bytes], *, start: bytes = b"") -> tuple[bool, int]:
    path.write_bytes(start)
    with open(path, "r+b") as out:
        out.seek(len(start))
        writer = PlainWriter(out, path, stage_bytes=STAGE)
        for piece in pieces:
            assert writer.write(piece) == len(piece)
        direct = writer.direct
        writer.close()
        return direct, out.tell()


def test_pieces_of_any_size_land_in_order(tmp_path: Path) -> None:
    pieces = _pieces(20 * STAGE + 1234, seed=1)
    path = tmp_path / "file.mu-part"
    direct, end = _write(path, pieces)
    assert path.read_bytes() == b"".join(pieces)
    assert end == path.stat().st_size
    assert direct == _direct_supported(tmp_path)  # past the page cache wherever the file system allows it


@pytest.mark.parametrize("kept", [1, ALIGN - 1, ALIGN, 3 * ALIGN + 17])
def test_a_resumed_part_file_keeps_its_start_and_goes_on_after_it(tmp_path: Path, kept: int) -> None:
    start = random.Random(kept).randbytes(kept)
    pieces = _pieces(5 * STAGE + 99, seed=kept)
    path = tmp_path / "file.mu-part"
    direct, end = _write(path, pieces, start=start)
    assert direct == _direct_supported(tmp_path)  # the staging buffer starts at an aligned offset
    assert path.read_bytes() == start + b"".join(pieces)
    assert end == kept + sum(map(len, pieces))


def test_close_writes_what_is_staged_when_less_than_a_block(tmp_path: Path) -> None:
    path = tmp_path / "small"
    _, end = _write(path, [b"abc"])
    assert path.read_bytes() == b"abc" and end == 3


def test_a_file_system_without_direct_io_gets_ordinary_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct(path: object, flags: int, *args: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # what tmpfs said before Linux 6.6
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(_output.os, "open", no_direct)
    pieces = _pieces(3 * STAGE + 5, seed=3)
    path = tmp_path / "file"
    direct, end = _write(path, pieces, start=b"xyz")
    assert not direct
    assert path.read_bytes() == b"xyz" + b"".join(pieces) and end == 3 + sum(map(len, pieces))


def test_a_refused_direct_write_goes_on_through_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("the file system has no O_DIRECT")
    path = tmp_path / "file"
    path.write_bytes(b"")
    pieces = _pieces(6 * STAGE + 11, seed=4)
    real_pwrite = os.pwrite
    with open(path, "r+b") as out:
        writer = PlainWriter(out, path, stage_bytes=STAGE)
        direct_fd = writer._direct
        calls = {"direct": 0}

        def pwrite(fd: int, data: object, offset: int) -> int:
            if fd == direct_fd:
                calls["direct"] += 1
                if calls["direct"] == 3:  # as a device with a larger block size would
                    raise OSError(errno.EINVAL, "Invalid argument")
            return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

        monkeypatch.setattr(_output.os, "pwrite", pwrite)
        for piece in pieces:
            writer.write(piece)
        assert not writer.direct
        writer.close()
    assert calls["direct"] == 3
    assert path.read_bytes() == b"".join(pieces)


def test_a_full_buffer_is_written_by_a_thread_while_the_next_ones_fill(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("the file system has no O_DIRECT")
    path = tmp_path / "file"
    path.write_bytes(b"")
    pieces = [random.Random(6).randbytes(STAGE) for _ in range(3)]
    device_busy, device_free = threading.Event(), threading.Event()
    real_pwrite = os.pwrite

    def slow_device(fd: int, data: object, offset: int) -> int:
        device_busy.set()
        assert device_free.wait(10), "the caller waited for the device"
        return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(_output.os, "pwrite", slow_device)
    with open(path, "r+b") as out:
        writer = PlainWriter(out, path, stage_bytes=STAGE, stages=4)
        for piece in pieces:  # three full buffers handed over, none written yet
            writer.write(piece)
        assert device_busy.wait(10) and writer.direct
        device_free.set()
        writer.close()
        assert out.tell() == 3 * STAGE
    assert path.read_bytes() == b"".join(pieces)


def test_a_full_disk_is_an_error_and_close_still_lets_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"")
    with open(path, "r+b") as out:
        # Two buffers: the second full one waits for the first one's write, whose error it raises.
        writer = PlainWriter(out, path, stage_bytes=STAGE, stages=2)

        def full(fd: int, data: object, offset: int) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(_output.os, "pwrite", full)
        with pytest.raises(OSError) as raised:
            for piece in _pieces(3 * STAGE, seed=5):
                writer.write(piece)
        assert raised.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            writer.close()  # what is staged cannot be written either
        assert not writer.direct  # the direct descriptor is closed all the same


def test_bench_write_runs_and_prints_both_ways(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, str(root / "scripts" / "bench_write.py"), "--size", "8", "--runs", "1", "--dir", str(tmp_path)],
        cwd=root, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    rows = {name: int(rate) for name, rate in re.findall(
        r"^\s+(buffered|PlainWriter)\s+(\d+) MiB/s\s+[\d.]+ ms CPU per MiB", out, re.MULTILINE)}
    assert set(rows) == {"buffered", "PlainWriter"} and min(rows.values()) > 0, out
    assert ("(PlainWriter direct)" in out) == _direct_supported(tmp_path), out
    assert not list(tmp_path.iterdir())  # its files are gone
