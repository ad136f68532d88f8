"""ChunkStore on real files: atomic puts, verified gets, quota, index rebuild (specs/chunks.md §8)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from node.store import (
    INDEX_FILE,
    SCHEMA_VERSION,
    ChunkCorrupt,
    ChunkMismatch,
    ChunkNotFound,
    ChunkStore,
    StoreFull,
)


def chunk(n: int = 1000) -> tuple[bytes, bytes]:
    data = os.urandom(n)
    return hashlib.sha256(data).digest(), data


def test_put_get_has_delete_list(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    items = [chunk(100 + i) for i in range(5)]
    for address, data in items:
        assert not store.has(address)
        assert store.put(address, data) is True
        assert store.put(address, data) is False
        assert store.has(address)
        assert store.get(address) == data
    assert store.list() == sorted(a for a, _ in items)
    assert sorted(store) == sorted(a for a, _ in items)
    assert len(store) == 5
    assert store.used_bytes == sum(len(d) for _, d in items)
    address, data = items[0]
    path = store.path_of(address)
    assert path.parent.name == address.hex()[:2] and path.name == address.hex()
    assert store.delete(address) is True
    assert store.delete(address) is False
    assert not store.has(address)
    assert store.used_bytes == sum(len(d) for _, d in items[1:])
    assert not any((tmp_path / "chunks" / "tmp").iterdir())
    store.close()


def test_put_rejects_bytes_that_do_not_match_the_address(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    address, data = chunk()
    with pytest.raises(ChunkMismatch) as info:
        store.put(address, data + b"x")
    assert address.hex() in str(info.value)
    assert not store.has(address)
    with pytest.raises(ValueError):
        store.put(address[:31], data)


def test_missing_and_corrupt_chunks_are_errors_naming_the_address(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    address, data = chunk()
    with pytest.raises(ChunkNotFound) as missing:
        store.get(address)
    assert address.hex() in str(missing.value) and missing.value.address == address
    store.put(address, data)
    path = store.path_of(address)
    raw = bytearray(path.read_bytes())
    raw[10] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkCorrupt) as corrupt:
        store.get(address)
    assert address.hex() in str(corrupt.value)
    assert store.get(address, verify=False) == bytes(raw)  # the caller asked to verify itself


def test_quota_gives_store_full_and_keeps_accounting(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, quota_bytes=2500)
    a, b, c = chunk(1000), chunk(1000), chunk(1000)
    store.put(*a)
    store.put(*b)
    with pytest.raises(StoreFull) as info:
        store.put(*c)
    assert "store full" in str(info.value) and c[0].hex() in str(info.value)
    assert not store.has(c[0]) and store.used_bytes == 2000
    store.delete(a[0])
    assert store.put(*c) is True


def test_put_many_counts_new_chunks(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    items = [chunk(50) for _ in range(10)]
    assert store.put_many(items[:4]) == 4
    assert store.put_many(items) == 6
    assert len(store) == 10


def test_index_rebuilds_from_files_alone(tmp_path: Path) -> None:
    root = tmp_path / "chunks"
    store = ChunkStore(root)
    items = [chunk(300) for _ in range(6)]
    store.put_many(items)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        (root / (INDEX_FILE + suffix)).unlink(missing_ok=True)
    reopened = ChunkStore(root)
    assert len(reopened) == 0  # a fresh index knows nothing yet
    report = reopened.rebuild_index()
    assert (report.chunks, report.added, report.removed) == (6, 6, 0)
    assert sorted(reopened) == sorted(a for a, _ in items)
    assert reopened.used_bytes == 6 * 300


def test_unclean_shutdown_is_repaired_on_open(tmp_path: Path) -> None:
    root = tmp_path / "chunks"
    store = ChunkStore(root)
    store.put(*chunk())
    # A crash between rename and index row: a chunk file the index lacks,
    # an index row whose file is gone, and a temp file left mid-write.
    extra_address, extra = chunk(77)
    path = store.path_of(extra_address)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(extra)
    gone = store.list()[0]
    store.path_of(gone).unlink()
    (root / "tmp" / "leftover.tmp").write_bytes(b"half")
    os.utime(root / "tmp" / "leftover.tmp", (0, 0))
    (root / "ab").mkdir(exist_ok=True)
    (root / "ab" / "not-a-chunk").write_bytes(b"?")
    del store  # no close(): the dirty flag stays set
    reopened = ChunkStore(root)
    assert reopened.list() == [extra_address]
    assert reopened.used_bytes == 77
    assert not (root / "tmp" / "leftover.tmp").exists()
    reopened.close()


def test_clean_close_skips_rebuild_and_index_is_versioned(tmp_path: Path) -> None:
    root = tmp_path / "chunks"
    with ChunkStore(root) as store:
        store.put(*chunk())
    db = sqlite3.connect(root / INDEX_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert db.execute("SELECT value FROM state WHERE name = 'dirty'").fetchone()[0] == 0
    db.close()


def test_concurrent_puts_of_one_chunk_store_it_once(tmp_path: Path) -> None:
    import threading

    stores = [ChunkStore(tmp_path), ChunkStore(tmp_path)]  # two handles, as two processes would have
    address, data = chunk(50_000)
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker(i: int) -> None:
        barrier.wait()
        results.append(stores[i % 2].put(address, data))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert sum(s.used_bytes for s in stores) == 50_000
    assert stores[0].get(address) == data
    assert not any((tmp_path / "tmp").iterdir())


def test_index_is_flagged_dirty_before_the_first_chunk_file_appears(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    address, data = chunk()
    seen: list[int] = []
    real_write = store._writer.write_file

    def spy(final: Path, addr: bytes, payload: bytes, *, direct: bool = False) -> bool:
        db = sqlite3.connect(tmp_path / INDEX_FILE)
        seen.append(db.execute("SELECT value FROM state WHERE name = 'dirty'").fetchone()[0])
        db.close()
        return real_write(final, addr, payload, direct=direct)

    store._writer.write_file = spy  # type: ignore[method-assign]
    store.put(address, data)
    assert seen == [1]
    store.close()
