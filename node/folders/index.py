"""The folder index: what a snapshot can skip, in SQLite under the data dir (specs/folders.md §10.1 Local state).

What it keeps, each keyed by the folder's public key where it matters:

* ``files``: per path, the ``lstat`` fields git's index compares (size,
  mtime_ns, inode, ctime_ns) and the file's link: a file whose fields are
  unchanged is not read again;
* ``sent_chunks`` and ``sent_roots``: chunk addresses and file roots stored
  on their R hosts (a paid PUT each), so a rerun after a crash or a later
  snapshot never pays twice for one chunk;
* ``directories``: the write cap's seed of the folder each directory was
  created or last snapshotted as, so ``mu folder snapshot DIR`` needs no link;
* ``pruned``: the snapshot records of each folder that retention pruned;
* ``pins``: the folders this node keeps with their verify link (``mu folder
  pin``): the store root they are pinned under, the newest snapshot and
  the chunk count;
* ``heads``: the newest record (sequence number and value) this node
  published or resolved per folder, so the next snapshot links to it and
  takes the next sequence number even when the DHT is unreachable.

Commits are durable (``synchronous=FULL``): a chunk recorded as sent was
paid for.  The file itself is 0600; it holds file names in clear, as the
tree it describes does, and the write caps of the directories it snapshots.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from node.store import migrate_schema
from protocol.chunks import Link

INDEX_FILE = "folders.sqlite3"
# Rows written per transaction while recording a scan.
BATCH_ROWS = 1000

# Ordered migrations; entry i brings the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE files (
        folder   BLOB NOT NULL,
        path     BLOB NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino      INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        root     BLOB NOT NULL,
        key      BLOB NOT NULL,
        PRIMARY KEY (folder, path)
    ) WITHOUT ROWID;
    CREATE TABLE sent_chunks (address BLOB PRIMARY KEY NOT NULL) WITHOUT ROWID;
    CREATE TABLE sent_roots (root BLOB PRIMARY KEY NOT NULL) WITHOUT ROWID;
    CREATE TABLE heads (
        folder BLOB PRIMARY KEY NOT NULL,
        seq    INTEGER NOT NULL,
        value  BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE directories (
        path BLOB PRIMARY KEY NOT NULL,
        seed BLOB NOT NULL
    ) WITHOUT ROWID;
    """,
    # Snapshots pruned by retention (specs/folders.md §9 Retention policy), so that applying the
    # policy again walks only the snapshots it has not pruned yet.
    """
    CREATE TABLE pruned (
        folder BLOB NOT NULL,
        root   BLOB NOT NULL,
        PRIMARY KEY (folder, root)
    ) WITHOUT ROWID;
    """,
    # Folders pinned with their verify link (specs/folders.md §7.1 Chunk list, §12 folder-pin).
    """
    CREATE TABLE pins (
        folder    BLOB PRIMARY KEY NOT NULL,
        root      BLOB NOT NULL,
        newest    INTEGER NOT NULL,
        chunks    INTEGER NOT NULL,
        pinned_ns INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class FileStamp:
    """The ``lstat`` fields that say a file is unchanged (git's index compares the same)."""

    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class Head:
    """The newest record known for a folder."""

    seq: int
    value: bytes


@dataclass(frozen=True, slots=True)
class PinnedFolder:
    """A folder this node keeps with its verify link, as of its last ``mu folder pin``."""

    folder: bytes  # the public key
    root: bytes  # the snapshot record root the chunks are pinned under in the store
    newest: int  # the newest snapshot's number
    chunks: int
    pinned_ns: int


class FolderIndex:
    """Thread-safe access to the data dir's folder index."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._migrate()

    @classmethod
    def open(cls, data_dir: Path) -> FolderIndex:
        return cls(Path(data_dir) / INDEX_FILE)

    def _migrate(self) -> None:
        with self._lock:
            migrate_schema(self._db, MIGRATIONS, "folder index")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> FolderIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def files(self, folder: bytes) -> dict[bytes, tuple[FileStamp, Link]]:
        """Every file recorded for ``folder``: path -> (stamp, link)."""
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns, ino, ctime_ns, root, key FROM files WHERE folder = ?",
                                    (folder,)).fetchall()
        return {path: (FileStamp(size, mtime, ino, ctime), Link(root, key))
                for path, size, mtime, ino, ctime, root, key in rows}

    def record_files(self, folder: bytes, rows: Iterable[tuple[bytes, FileStamp, Link]], *, keep: set[bytes]) -> None:
        """Record the files of a scan and forget paths of ``folder`` that are not in ``keep``."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO files (folder, path, size, mtime_ns, ino, ctime_ns, root, key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((folder, path, s.size, s.mtime_ns, s.ino, s.ctime_ns, link.root, link.key) for path, s, link in rows))
            gone = [(folder, p) for (p,) in self._db.execute("SELECT path FROM files WHERE folder = ?", (folder,))
                    if p not in keep]
            self._db.executemany("DELETE FROM files WHERE folder = ? AND path = ?", gone)
            self._db.execute("COMMIT")

    def chunk_sent(self, address: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM sent_chunks WHERE address = ?", (address,)).fetchone() is not None

    def record_chunk_sent(self, address: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO sent_chunks (address) VALUES (?)", (address,))

    def root_sent(self, root: bytes) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM sent_roots WHERE root = ?", (root,)).fetchone() is not None

    def record_root_sent(self, root: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO sent_roots (root) VALUES (?)", (root,))

    def head(self, folder: bytes) -> Head | None:
        with self._lock:
            row = self._db.execute("SELECT seq, value FROM heads WHERE folder = ?", (folder,)).fetchone()
        return Head(int(row[0]), bytes(row[1])) if row else None

    def record_head(self, folder: bytes, head: Head) -> None:
        """Keep ``head`` if its sequence number is higher than the one recorded."""
        with self._lock:
            self._db.execute(
                "INSERT INTO heads (folder, seq, value) VALUES (?, ?, ?) ON CONFLICT(folder) DO UPDATE"
                " SET seq = excluded.seq, value = excluded.value WHERE excluded.seq > heads.seq",
                (folder, head.seq, head.value))

    def pruned(self, folder: bytes) -> set[bytes]:
        """Snapshot record roots of ``folder`` already pruned."""
        with self._lock:
            return {bytes(r[0]) for r in self._db.execute("SELECT root FROM pruned WHERE folder = ?", (folder,))}

    def record_pruned(self, folder: bytes, records: Iterable[bytes], *, chunks: Iterable[bytes],
                      roots: Iterable[bytes]) -> None:
        """Record snapshots as pruned and forget that their chunks and file roots were sent.

        A chunk no kept snapshot needs is no longer paid for, so hosts may drop
        it: should a later snapshot hold it again, it must be uploaded again.
        """
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO pruned (folder, root) VALUES (?, ?)",
                                 ((folder, r) for r in records))
            self._db.executemany("DELETE FROM sent_chunks WHERE address = ?", ((a,) for a in chunks))
            self._db.executemany("DELETE FROM sent_roots WHERE root = ?", ((r,) for r in roots))
            self._db.execute("COMMIT")

    def record_pin(self, pin: PinnedFolder) -> PinnedFolder | None:
        """Record ``pin`` for its folder; return the one it replaces (whose store root may be unpinned)."""
        with self._lock:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT folder, root, newest, chunks, pinned_ns FROM pins WHERE folder = ?",
                                   (pin.folder,)).fetchone()
            self._db.execute("INSERT OR REPLACE INTO pins (folder, root, newest, chunks, pinned_ns) VALUES (?, ?, ?, ?, ?)",
                             (pin.folder, pin.root, pin.newest, pin.chunks, pin.pinned_ns))
            self._db.execute("COMMIT")
        return PinnedFolder(bytes(row[0]), bytes(row[1]), *row[2:]) if row else None

    def pins(self) -> list[PinnedFolder]:
        """The folders pinned here, oldest pin first."""
        with self._lock:
            rows = self._db.execute("SELECT folder, root, newest, chunks, pinned_ns FROM pins ORDER BY pinned_ns")
            return [PinnedFolder(bytes(f), bytes(r), n, c, t) for f, r, n, c, t in rows]

    def remember(self, directory: bytes, seed: bytes) -> None:
        """``directory`` (absolute, resolved) is snapshotted as the folder of this signing seed."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO directories (path, seed) VALUES (?, ?)", (directory, seed))

    def remembered(self, directory: bytes) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT seed FROM directories WHERE path = ?", (directory,)).fetchone()
        return bytes(row[0]) if row else None
