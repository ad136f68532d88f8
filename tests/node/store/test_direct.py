"""A host's paid PUTs written past the page cache (O_DIRECT), and the fallback (node/store/_writer.py)."""

from __future__ import annotations

import errno
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.store import ChunkStore
from node.store import _writer
from node.store._writer import DIRECT_ALIGN, DIRECT_BUFFERS, MAX_CHUNK_BYTES, DirectBuffers

pytestmark = pytest.mark.skipif(_writer.O_DIRECT == 0, reason="no O_DIRECT on this platform")

# Around the block size, a typical chunk, and the largest chunk the store takes.
UNTIL = 2_000_000_000  # a paid PUT's retention
SIZES = [1, DIRECT_ALIGN - 1, DIRECT_ALIGN, DIRECT_ALIGN + 1, 3 * DIRECT_ALIGN, 1024 * 1024 + 17, MAX_CHUNK_BYTES]


def chunk(n: int) -> tuple[bytes, bytes]:
    data = os.urandom(n)
    return hashlib.sha256(data).digest(), data


def count_direct(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the bytes each direct write put on disk."""
    written: list[int] = []
    real = _writer._write_direct

    def spy(fd: int, view: memoryview, buffer: object) -> int:
        done = real(fd, view, buffer)  # type: ignore[arg-type]
        written.append(done)
        return done

    monkeypatch.setattr(_writer, "_write_direct", spy)
    return written


@pytest.mark.parametrize("size", SIZES)
def test_a_chunk_written_past_the_cache_reads_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         size: int) -> None:
    written = count_direct(monkeypatch)
    store = ChunkStore(tmp_path / "chunks")
    address, data = chunk(size)
    assert store.put_retained(address, data, UNTIL) is True
    assert store.get(address) == data
    assert store.meta(address).paid_until == UNTIL  # type: ignore[union-attr]
    assert os.path.getsize(store._writer.path_of(address)) == size
    # Whole blocks go direct; a chunk under one block goes through the cache alone.
    assert written == ([size - size % DIRECT_ALIGN] if size >= DIRECT_ALIGN else [])
    store.close()


def test_paid_puts_from_many_threads_past_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = count_direct(monkeypatch)
    store = ChunkStore(tmp_path / "chunks")
    items = [chunk(100_000 + 4099 * i) for i in range(40)]
    with ThreadPoolExecutor(max_workers=2 * DIRECT_BUFFERS) as pool:  # more writers than buffers
        assert all(pool.map(lambda item: store.put_retained(item[0], item[1], UNTIL), items))
    assert 0 < len(written) <= 40  # a writer finding no free buffer goes through the cache
    assert all(store.get(address) == data for address, data in items)
    store.close()
    reopened = ChunkStore(tmp_path / "chunks")  # clean close: no rebuild, every row there
    assert len(reopened) == 40 and reopened.used_bytes == sum(len(d) for _, d in items)
    reopened.close()


def test_the_nodes_own_chunks_go_through_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = count_direct(monkeypatch)
    store = ChunkStore(tmp_path / "chunks")
    items = [chunk(100_000 + i) for i in range(4)]
    assert store.put_stream(iter(items[:2])) == (2, 2)
    assert store.put_many(items[2:]) == 2
    assert written == []
    store.close()


def test_a_filesystem_refusing_direct_opens_is_written_through_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open
    refused: list[str] = []

    def open_without_direct(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if flags & _writer.O_DIRECT:
            fd = real_open(path, flags & ~_writer.O_DIRECT, mode)  # the file is created, then refused
            os.close(fd)
            refused.append(str(path))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", open_without_direct)
    store = ChunkStore(tmp_path / "chunks")
    items = [chunk(50_000 + i) for i in range(5)]
    for address, data in items:
        assert store.put_retained(address, data, UNTIL) is True
    assert len(refused) == 1  # asked once, then the store stops asking
    assert store._writer.direct is False
    assert all(store.get(address) == data for address, data in items)
    assert os.listdir(tmp_path / "chunks" / "tmp") == []  # the refused open left no temp file
    store.close()


def test_a_refused_direct_write_is_rewritten_through_the_cache(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, view: memoryview, buffer: object) -> int:
        os.write(fd, b"half a block")  # whatever a refusing filesystem left: the file is emptied
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(_writer, "_write_direct", refuse)
    store = ChunkStore(tmp_path / "chunks")
    address, data = chunk(3 * DIRECT_ALIGN + 5)
    assert store.put_retained(address, data, UNTIL) is True
    assert store.get(address) == data
    assert os.path.getsize(store._writer.path_of(address)) == len(data)
    assert store._writer.direct is False
    store.close()


def test_other_write_errors_are_not_taken_for_a_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(fd: int, view: memoryview, buffer: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_writer, "_write_direct", disk_full)
    store = ChunkStore(tmp_path / "chunks")
    address, data = chunk(2 * DIRECT_ALIGN)
    with pytest.raises(_writer.StoreFull):
        store.put_retained(address, data, UNTIL)
    assert store._writer.direct is True
    assert not store.has(address) and store.used_bytes == 0
    assert os.listdir(tmp_path / "chunks" / "tmp") == []
    store.close()


def test_buffers_are_bounded_and_reused() -> None:
    buffers = DirectBuffers(count=2, size=DIRECT_ALIGN + 1)
    assert buffers.size == 2 * DIRECT_ALIGN
    first, second = buffers.take(), buffers.take()
    assert first is not None and second is not None and first is not second
    assert buffers.take() is None  # the third writer goes through the cache
    buffers.give(first)
    assert buffers.take() is first
