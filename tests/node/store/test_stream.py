"""ChunkStore.put_stream: the add path's streaming durable writes (specs/chunks.md §8.2)."""

from __future__ import annotations

import gc
import hashlib
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import node.store._stream as stream_module
from node.store import ChunkMismatch, ChunkStore, StoreFull


def chunk(n: int = 200) -> tuple[bytes, bytes]:
    data = os.urandom(n)
    return hashlib.sha256(data).digest(), data


def test_stream_stores_every_chunk_and_counts_new_ones(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    items = [chunk(100 + i) for i in range(40)]
    store.put_many(items[:5])
    # A window smaller than the stream exercises the producer waiting on writes.
    assert store.put_stream(iter(items), window=3) == (40, 35)
    assert sorted(store) == sorted(a for a, _ in items)
    for address, data in items:
        assert store.path_of(address).read_bytes() == data
    assert not list((tmp_path / "tmp").iterdir())
    assert store.used_bytes == sum(len(d) for _, d in items)


def test_stream_checkpoints_index_rows_before_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "STREAM_CHECKPOINT", 4)
    store = ChunkStore(tmp_path)
    items = [chunk() for _ in range(12)]
    indexed_midway: list[int] = []

    def produce() -> Iterator[tuple[bytes, bytes]]:
        for i, item in enumerate(items):
            if i == 10:
                indexed_midway.append(len(store))
            yield item

    assert store.put_stream(produce(), window=1) == (12, 12)
    assert indexed_midway[0] >= 4  # rows were committed at a checkpoint
    assert len(store) == 12


def test_stream_mismatch_keeps_earlier_chunks_and_raises(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    good = [chunk() for _ in range(3)]
    bad_address = hashlib.sha256(b"something else").digest()
    items = good + [(bad_address, os.urandom(50))] + [chunk()]
    with pytest.raises(ChunkMismatch):
        store.put_stream(iter(items))
    assert sorted(store) == sorted(a for a, _ in good)
    assert not store.has(items[-1][0])


def test_stream_unverified_trusts_the_caller(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    address, data = chunk()
    assert store.put_stream([(address, data)], verify=False) == (1, 1)
    assert store.get(address) == data


def test_stream_quota_stops_with_store_full(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, quota_bytes=1000)
    items = [chunk(300) for _ in range(5)]
    with pytest.raises(StoreFull):
        store.put_stream(iter(items))
    assert len(store) == 3
    assert store.used_bytes == 900


def test_stream_producer_error_still_commits_what_was_written(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    items = [chunk() for _ in range(4)]

    def produce() -> Iterator[tuple[bytes, bytes]]:
        yield from items
        raise OSError("read failed")

    with pytest.raises(OSError, match="read failed"):
        store.put_stream(produce())
    assert sorted(store) == sorted(a for a, _ in items)


def test_write_thread_drops_chunk_bytes_before_fdatasync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What makes a wide STREAM_WINDOW cheap in memory (specs/chunks.md §8.2).
    store = ChunkStore(tmp_path)

    class Payload(bytearray):
        pass

    box: list[bytes | bytearray | memoryview] = [Payload(os.urandom(5000))]
    address = hashlib.sha256(box[0]).digest()
    ref = weakref.ref(box[0])
    events: list[tuple[str, object]] = []
    real_sync = os.fdatasync

    def spy(fd: int) -> None:
        gc.collect()
        events.append(("sync", ref() is None))
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    assert store._writer.write_taken(store.path_of(address), address, box, lambda n: events.append(("written", n)))
    assert events == [("written", 5000), ("sync", True)]
    assert box == []
    assert hashlib.sha256(store.path_of(address).read_bytes()).digest() == address


def test_byte_budget_blocks_until_bytes_are_written() -> None:
    class Observed(threading.Condition):
        def __init__(self) -> None:
            super().__init__()
            self.waiting = threading.Event()

        def wait(self, timeout: float | None = None) -> bool:
            self.waiting.set()
            return super().wait(timeout)

    budget = stream_module._ByteBudget(15)
    cond = budget._cond = Observed()
    budget.take(10)
    done = threading.Event()

    def second() -> None:
        budget.take(10)
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert cond.waiting.wait(10)  # 10 + 10 > 15: the second take waits
    assert not done.is_set()
    budget.give_back(10)
    thread.join(10)
    assert done.is_set()
    budget.give_back(10)
    budget.take(40)  # one chunk alone always fits, whatever its size


def test_stream_keeps_unwritten_bytes_under_the_buffer_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peaks: list[int] = []

    class Recording(stream_module._ByteBudget):
        def take(self, size: int) -> None:
            super().take(size)
            peaks.append(self._held)

    monkeypatch.setattr(stream_module, "_ByteBudget", Recording)
    monkeypatch.setattr(stream_module, "STREAM_BUFFER_BYTES", 2500)
    store = ChunkStore(tmp_path)
    items = [chunk(1000) for _ in range(30)]
    assert store.put_stream(iter(items)) == (30, 30)
    assert len(peaks) == 30 and max(peaks) <= 2500
    assert sorted(store) == sorted(a for a, _ in items)
