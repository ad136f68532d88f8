"""The chunk store's index: one SQLite row per chunk file (specs/chunks.md §8.3).

The files are the truth; the index is a cache of them (address, size, time
added) that makes listing, accounting and per-chunk metadata cheap. It can be
rebuilt from the files alone at any time. Later schema versions add columns
through ``MIGRATIONS`` without a format break: ``PRAGMA user_version`` says
which migrations have run.

Version 2 adds retention metadata (specs/chunks.md §8.6): per chunk
``paid_until`` (unix seconds; NULL for a chunk nobody paid to store) and
``pinned``, plus the ``pins`` table of pinned roots.  This metadata is not in
the files: a rebuild keeps it for every row that stays, and gives chunks it
finds without a row a grace retention instead of guessing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

INDEX_FILE = "index.sqlite3"
# Addresses fetched per query when iterating, so listing a huge store never
# holds the whole list in memory.
ITER_PAGE = 1024

# Ordered migrations; entry i brings the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE chunks (
        address  BLOB PRIMARY KEY NOT NULL,
        size     INTEGER NOT NULL,
        added_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE state (
        name  TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE chunks ADD COLUMN paid_until INTEGER;
    ALTER TABLE chunks ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX chunks_expiry ON chunks (paid_until) WHERE paid_until IS NOT NULL AND pinned = 0;
    CREATE TABLE pins (
        root      BLOB PRIMARY KEY NOT NULL,
        pinned_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# Bytes of an address kept in memory per indexed chunk, so that "is it here?"
# is answered without I/O (ChunkIndex.may_hold): about 60 bytes of RAM per
# chunk; two chunks sharing the prefix only cost a look at the file.
PRESENCE_PREFIX_BYTES = 8


def migrate_schema(db: sqlite3.Connection, migrations: Sequence[str], what: str) -> None:
    """Bring ``db`` (autocommit mode) to ``len(migrations)`` through ``PRAGMA user_version``.

    Each migration runs in its own transaction with the version bump, so a
    crash leaves the file at one version or the next; a newer file is refused.
    """
    latest = len(migrations)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > latest:
        raise sqlite3.DatabaseError(f"{what} schema v{version} is newer than this mu (v{latest})")
    for number in range(version, latest):
        db.execute("BEGIN IMMEDIATE")
        for statement in migrations[number].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {number + 1}")
        db.execute("COMMIT")


def _prefix(address: bytes) -> int:
    return int.from_bytes(address[:PRESENCE_PREFIX_BYTES], "big")


class ChunkIndex:
    """Thread-safe access to the index database of one store."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        # The index can be rebuilt from the files, so it does not need a
        # durable commit per chunk: WAL with synchronous=NORMAL. An unclean
        # shutdown is detected with the "dirty" flag and repaired on open.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()
        with self._lock:
            self._present = {_prefix(bytes(a)) for (a,) in self._db.execute("SELECT address FROM chunks")}

    def may_hold(self, address: bytes) -> bool:
        """False when no indexed chunk has ``address``, from memory: no I/O, no lock.

        True may be a chunk sharing the first ``PRESENCE_PREFIX_BYTES`` bytes.
        """
        return _prefix(address) in self._present

    def _migrate(self) -> None:
        with self._lock:
            migrate_schema(self._db, MIGRATIONS, "index")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get_flag(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_flag(self, name: str, value: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)", (name, value))

    def add(self, rows: Iterable[tuple[bytes, int]], now: int, *, paid_until: int | None = None) -> None:
        """Record chunks (address, size) that are now on disk.

        With ``paid_until`` their retention is set to at least that, in the
        same commit, made durable as ``extend_retention``'s (specs/chunks.md
        §8.6): a paid PUT's row and retention cost one index commit.
        """
        rows = list(rows)
        with self._lock:
            if paid_until is not None:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO chunks (address, size, added_at, paid_until) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(address) DO UPDATE SET size = excluded.size,"
                    " paid_until = CASE WHEN excluded.paid_until IS NULL THEN paid_until"
                    " ELSE max(coalesce(paid_until, 0), excluded.paid_until) END",
                    ((address, size, now, paid_until) for address, size in rows),
                )
                self._db.execute("COMMIT")
            finally:
                if paid_until is not None:
                    self._db.execute("PRAGMA synchronous=NORMAL")
            self._present.update(_prefix(address) for address, _size in rows)

    def remove(self, address: bytes) -> None:
        low = address[:PRESENCE_PREFIX_BYTES]
        high = low + b"\xff" * (len(address) - PRESENCE_PREFIX_BYTES)
        with self._lock:
            self._db.execute("DELETE FROM chunks WHERE address = ?", (address,))
            # another chunk may share the prefix: keep it in memory then
            if self._db.execute("SELECT 1 FROM chunks WHERE address >= ? AND address <= ? LIMIT 1",
                                (low, high)).fetchone() is None:
                self._present.discard(_prefix(address))

    def total_bytes(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT total(size) FROM chunks").fetchone()[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def size_of(self, address: bytes) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT size FROM chunks WHERE address = ?", (address,)).fetchone()
        return None if row is None else int(row[0])

    def iter_rows(self) -> Iterator[tuple[bytes, int]]:
        """Every (address, size) in address order, a page at a time."""
        last = b""
        while True:
            with self._lock:
                page = self._db.execute(
                    "SELECT address, size FROM chunks WHERE address > ? ORDER BY address LIMIT ?", (last, ITER_PAGE)
                ).fetchall()
            if not page:
                return
            for address, size in page:
                yield bytes(address), int(size)
            last = page[-1][0]

    def reconcile(self, on_disk: dict[bytes, int], now: int, recovered_until: int | None = None) -> tuple[int, int]:
        """Make the index list exactly ``on_disk``; keep metadata of rows that stay.

        Rows added for files the index did not list get ``paid_until =
        recovered_until`` (a grace retention: their real metadata is unknown).

        Returns:
            (rows added, rows removed).
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            known = {bytes(a): int(s) for a, s in self._db.execute("SELECT address, size FROM chunks")}
            gone = [(a,) for a in known if a not in on_disk]
            self._db.executemany("DELETE FROM chunks WHERE address = ?", gone)
            new = [(a, s, now, recovered_until) for a, s in on_disk.items() if a not in known]
            self._db.executemany("INSERT INTO chunks (address, size, added_at, paid_until) VALUES (?, ?, ?, ?)", new)
            changed = [(s, a) for a, s in on_disk.items() if a in known and known[a] != s]
            self._db.executemany("UPDATE chunks SET size = ? WHERE address = ?", changed)
            self._db.execute("COMMIT")
            self._present = {_prefix(a) for a in on_disk}
        return len(new), len(gone)

    # -- retention metadata (schema v2, specs/chunks.md §8.6) -------------

    def extend_retention(self, addresses: Iterable[bytes], until: int) -> int:
        """Set ``paid_until`` to at least ``until`` on stored chunks; return rows changed."""
        with self._lock:
            # Paid retention is not in the files either: a durable commit,
            # so a power failure cannot make a paid chunk expire early.
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN")
                cur = self._db.executemany(
                    "UPDATE chunks SET paid_until = max(coalesce(paid_until, 0), ?) WHERE address = ?",
                    ((until, bytes(a)) for a in addresses),
                )
                self._db.execute("COMMIT")
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
        return cur.rowcount

    def meta_of(self, address: bytes) -> tuple[int | None, bool] | None:
        """(paid_until, pinned) of a stored chunk, or None if the index has no row."""
        with self._lock:
            row = self._db.execute("SELECT paid_until, pinned FROM chunks WHERE address = ?", (address,)).fetchone()
        return None if row is None else (None if row[0] is None else int(row[0]), bool(row[1]))

    def set_pinned(self, addresses: Iterable[bytes], pinned: bool, *, root: bytes | None, now: int) -> int:
        """Pin or unpin chunks (and record or drop ``root``), durably; return rows changed."""
        with self._lock:
            # Pins are not recoverable from the files: this commit is made
            # durable (synchronous=FULL) even though chunk rows are not.
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.executemany("UPDATE chunks SET pinned = ? WHERE address = ?",
                                           ((int(pinned), bytes(a)) for a in addresses))
                changed = cur.rowcount
                if root is not None and pinned:
                    self._db.execute("INSERT OR IGNORE INTO pins (root, pinned_at) VALUES (?, ?)", (bytes(root), now))
                elif root is not None:
                    self._db.execute("DELETE FROM pins WHERE root = ?", (bytes(root),))
                self._db.execute("COMMIT")
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
        return changed

    def pin_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM pins").fetchone()[0])

    def is_pinned_root(self, root: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM pins WHERE root = ?", (bytes(root),)).fetchone() is not None

    def pinned_roots(self) -> list[bytes]:
        with self._lock:
            return [bytes(r[0]) for r in self._db.execute("SELECT root FROM pins ORDER BY pinned_at, root")]

    def expired(self, now: int, limit: int) -> list[tuple[bytes, int]]:
        """Up to ``limit`` unpinned (address, paid_until) whose paid retention ended at or before ``now``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT address, paid_until FROM chunks WHERE paid_until IS NOT NULL AND pinned = 0"
                " AND paid_until <= ? ORDER BY paid_until, address LIMIT ?", (now, limit)).fetchall()
        return [(bytes(a), int(t)) for a, t in rows]

    def iter_meta(self) -> Iterator[tuple[bytes, int, int | None, bool]]:
        """Every (address, size, paid_until, pinned) in address order, a page at a time."""
        last = b""
        while True:
            with self._lock:
                page = self._db.execute(
                    "SELECT address, size, paid_until, pinned FROM chunks WHERE address > ?"
                    " ORDER BY address LIMIT ?", (last, ITER_PAGE)).fetchall()
            if not page:
                return
            for address, size, until, pinned in page:
                yield bytes(address), int(size), None if until is None else int(until), bool(pinned)
            last = page[-1][0]
