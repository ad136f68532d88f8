"""Retention metadata in the chunk store: migration, extend, expire, pin, rebuild (specs/chunks.md §8.6)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from node.store import INDEX_FILE, SCHEMA_VERSION, STORE_DIR, ChunkStore
from node.store._index import MIGRATIONS
from node.store.retention import collect_once

REPO_ROOT = Path(__file__).resolve().parents[3]
T0 = 1_800_000_000


def chunk(n: int = 1000) -> tuple[bytes, bytes]:
    data = os.urandom(n)
    return hashlib.sha256(data).digest(), data


def test_migration_from_v1_keeps_rows_and_adds_metadata(tmp_path: Path) -> None:
    root = tmp_path / "chunks"
    root.mkdir()
    address, data = chunk()
    (root / address.hex()[:2]).mkdir()
    (root / address.hex()[:2] / address.hex()).write_bytes(data)
    # A store index as the previous mu (schema v1) left it.
    db = sqlite3.connect(root / INDEX_FILE, isolation_level=None)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO chunks (address, size, added_at) VALUES (?, ?, ?)", (address, len(data), T0))
    db.execute("INSERT INTO state (name, value) VALUES ('dirty', 0)")
    db.execute("PRAGMA user_version = 1")
    db.close()
    with ChunkStore(root) as store:
        meta = store.meta(address)
        assert meta is not None and (meta.size, meta.paid_until, meta.pinned) == (len(data), None, False)
        assert store.expired(T0 + 10**9) == []  # not a paid chunk: never expires
        assert store.pinned_roots() == []
    db = sqlite3.connect(root / INDEX_FILE)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_extend_keeps_the_later_time_and_expired_lists_unpinned_only(tmp_path: Path) -> None:
    with ChunkStore(tmp_path / "chunks") as store:
        (a, da), (b, db_), (c, dc) = chunk(), chunk(), chunk()
        assert store.put_retained(a, da, T0 + 100) is True
        assert store.put_retained(a, da, T0 + 50) is False  # already held: retention kept at the max
        assert store.meta(a).paid_until == T0 + 100
        assert store.extend_retention(a, T0 + 200) is True
        assert store.meta(a).paid_until == T0 + 200
        store.put_retained(b, db_, T0 + 100)
        store.put(c, dc)  # not paid storage
        assert store.extend_retention(chunk()[0], T0) is False  # not stored
        assert store.expired(T0 + 99) == []
        assert store.expired(T0 + 100) == [b]
        assert store.expired(T0 + 200) == [b, a]  # oldest first
        assert store.pin([b], root=b, now=T0) == 1
        assert store.expired(T0 + 200) == [a]
        removed = store.collect_expired(T0 + 200)
        assert removed == [a] and not store.has(a)
        assert store.has(b) and store.has(c)
        assert store.used_bytes == len(db_) + len(dc)
        # Unpinned again, b goes on the next pass.
        assert store.unpin([b], root=b) == 1
        assert store.pinned_roots() == []
        assert store.collect_expired(T0 + 200) == [b]
        assert store.list() == [c]


def test_pins_and_retention_survive_reopen_and_rebuild(tmp_path: Path) -> None:
    root = tmp_path / "chunks"
    (a, da), (b, db_) = chunk(), chunk()
    with ChunkStore(root) as store:
        store.put(a, da)
        store.pin([a], root=a, now=T0)
        store.put_retained(b, db_, T0 + 500)
    with ChunkStore(root) as store:
        assert store.pinned_roots() == [a]
        assert store.meta(a).pinned and store.meta(b).paid_until == T0 + 500
        report = store.rebuild_index(now=T0)
        assert (report.added, report.removed, report.recovered) == (0, 0, 0)
        assert store.meta(a).pinned and store.meta(b).paid_until == T0 + 500
        # A chunk file with no index row (a crash between link and row): kept
        # with a grace retention, unpinned, never collected before it ends.
        c, dc = chunk()
        (root / c.hex()[:2]).mkdir(exist_ok=True)
        (root / c.hex()[:2] / c.hex()).write_bytes(dc)
        report = store.rebuild_index(now=T0, grace_seconds=1000)
        assert report.recovered == 1
        meta = store.meta(c)
        assert meta is not None and (meta.paid_until, meta.pinned) == (T0 + 1000, False)
        assert store.collect_expired(T0 + 999) == [b]  # b's paid retention ended at T0 + 500
        assert collect_once(store, T0 + 1000).removed == (c,)
        assert store.list() == [a]


def test_collect_withdraws_provider_records(tmp_path: Path) -> None:
    from protocol.fetch import dht_key

    class Dht:
        def __init__(self) -> None:
            self.withdrawn: list[bytes] = []

        def withdraw_provider(self, key: bytes) -> None:
            self.withdrawn.append(key)

    dht = Dht()
    with ChunkStore(tmp_path / "chunks") as store:
        items = [chunk(10 + i) for i in range(5)]
        for i, (address, data) in enumerate(items):
            store.put_retained(address, data, T0 + i)
        report = collect_once(store, T0 + 2, dht, batch=2)  # batches of 2 until none is left
        assert sorted(report.removed) == sorted(a for a, _ in items[:3])
        assert report.bytes_freed == sum(len(d) for _, d in items[:3])
        assert sorted(dht.withdrawn) == sorted(dht_key(a) for a, _ in items[:3])
        assert len(store) == 2


def mu(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, check=True, timeout=120)


def test_cli_store_ls_shows_retention_and_gc_collects(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    (a, da), (b, db_) = chunk(), chunk()
    with ChunkStore(data_dir / STORE_DIR) as store:
        store.put(a, da)
        store.pin([a], root=a, now=T0)
        store.put_retained(b, db_, T0 + 60)
    listing = json.loads(mu(data_dir, "store", "ls", "--json").stdout)
    rows = {r["address"]: r for r in listing["chunks"]}
    assert rows[a.hex()]["pinned"] is True and rows[a.hex()]["paid_until"] is None
    assert rows[b.hex()]["pinned"] is False and rows[b.hex()]["paid_until"] == T0 + 60
    assert listing["pinned_roots"] == [a.hex()]
    assert "paid until" in mu(data_dir, "store", "ls").stdout
    early = json.loads(mu(data_dir, "store", "gc", "--json", "--now", str(T0 + 59)).stdout)
    assert early["expired_removed"] == []
    late = json.loads(mu(data_dir, "store", "gc", "--json", "--now", str(T0 + 60)).stdout)
    assert late["expired_removed"] == [b.hex()] and late["expired_bytes"] == len(db_)
    with ChunkStore(data_dir / STORE_DIR) as store:
        assert store.list() == [a] and store.pinned_roots() == [a]


def test_pinned_roots_are_bounded(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from node.store import StoreError
    from node.store import retention

    monkeypatch.setattr(retention, "MAX_PINNED_ROOTS", 2)
    with ChunkStore(tmp_path / "chunks") as store:
        items = [chunk() for _ in range(3)]
        for address, data in items:
            store.put(address, data)
        store.pin([items[0][0]], root=items[0][0], now=T0)
        store.pin([items[1][0]], root=items[1][0], now=T0 + 1)
        store.pin([items[1][0]], root=items[1][0], now=T0 + 2)  # the same root again: fine
        with pytest.raises(StoreError):
            store.pin([items[2][0]], root=items[2][0], now=T0 + 3)
        assert store.pinned_roots() == [items[0][0], items[1][0]]
        assert not store.meta(items[2][0]).pinned


def test_paid_put_racing_the_gc_never_loses_the_chunk(tmp_path: Path) -> None:
    import threading

    with ChunkStore(tmp_path / "chunks") as store:
        items = [chunk(200 + i) for i in range(40)]
        for address, data in items:
            store.put_retained(address, data, T0)  # all expired at T0 + 10
        barrier = threading.Barrier(2)
        removed: list[bytes] = []

        def gc() -> None:
            barrier.wait()
            for _ in range(20):
                removed.extend(store.collect_expired(T0 + 10))

        def paid_puts() -> None:
            barrier.wait()
            for address, data in items:
                store.put_retained(address, data, T0 + 1000)

        threads = [threading.Thread(target=gc), threading.Thread(target=paid_puts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Whatever the interleaving, every chunk paid for again is held, intact, until T0 + 1000.
        for address, data in items:
            assert store.get(address) == data
            assert store.meta(address).paid_until == T0 + 1000
        assert store.expired(T0 + 999) == []
        assert store.used_bytes == sum(len(d) for _, d in items)


async def test_daemon_gc_loop_runs_every_period(tmp_path: Path, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    import trio

    from node.store.retention import GarbageCollector

    now = [float(T0)]
    with ChunkStore(tmp_path / "chunks") as store:
        (a, da), (b, db_) = chunk(), chunk()
        store.put_retained(a, da, T0 + 100)
        store.put_retained(b, db_, T0 + 2000)
        gc = GarbageCollector(store, period=600, wall_clock=lambda: now[0])
        async with trio.open_nursery() as nursery:
            await nursery.start(gc.serve)
            now[0] = T0 + 700
            # Virtual time (autojump): the first pass runs one period after start.
            start = trio.current_time()
            await gc.wait_passes(1)
            assert trio.current_time() - start >= 600
            assert store.list() == [b]
            assert gc.removed_total == 1
            now[0] = T0 + 2000
            await gc.wait_passes(2)
            assert store.list() == [] and gc.status()["removed"] == 2
            nursery.cancel_scope.cancel()
