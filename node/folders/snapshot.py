"""Taking a snapshot of a directory into the local store (specs/folders.md §10 Taking a snapshot).

The scan walks the tree with ``lstat`` (symlinks are entries, never
followed) and, as git's index does, reads a file only when its size,
mtime_ns, inode or ctime_ns differ from what the folder index recorded.  A
file read is chunked and encrypted into the store under the folder's chunk
secret, so equal plaintext chunks get equal addresses across files and
snapshots of this folder.  The manifest and the snapshot record are then
stored the same way (as files), and the index records what was read.

Nothing here talks to the network: ``node/folders/network.py`` uploads
what the snapshot names and publishes its record.
"""

from __future__ import annotations

import functools
import os
import secrets
import stat
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from node.files.local import AddResult, add_file
from node.folders.index import FileStamp, FolderIndex
from node.store import ChunkStore
from protocol.chunks import Link
from protocol.folders import Entry, EntryKind, Snapshot, WriteCap, encode_manifest

# A file modified less than this before the scan began may be modified again within the
# file system's timestamp granularity without its stamp changing ("racily clean" in git):
# it is read now and recorded so that the next scan reads it again.
RACY_NS = 2 * 10**9
TMP_DIR = "folders-tmp"
# Files this small are stored several at a time: each costs about two chunk fsyncs, which
# the device overlaps; SMALL_FILES_AHEAD bounds the futures (and open files) in flight.
SMALL_FILE_BYTES = 1024 * 1024
SMALL_FILE_THREADS = 8
SMALL_FILES_AHEAD = 64


class FolderError(Exception):
    """A snapshot or restore cannot proceed; the message says why (and names no secret)."""


def store_file(store: ChunkStore, path: Path, chunk_secret: bytes) -> AddResult:
    """Chunk and encrypt one file of a folder under the folder's chunk secret.

    The one place that says how a folder's file is cut (specs/folders.md §10
    Taking a snapshot): content-defined chunks, each keyed by its content
    under the secret (specs/chunks.md §6.6), so an edit changes only the
    chunks around it and equal chunks of any file or snapshot of the folder
    are stored and paid for once.  The name is left empty: the tree's names
    live in the folder manifest only.
    """
    return add_file(store, path, chunk_secret=chunk_secret, name="")


def store_bytes(store: ChunkStore, data: bytes, chunk_secret: bytes, tmp_dir: Path) -> AddResult:
    """Store ``data`` (a manifest or a snapshot record) like a file.

    The plaintext passes through a 0600 file under ``tmp_dir`` (the data
    dir's, never the scanned tree's), removed before this returns.
    """
    tmp_dir.mkdir(mode=0o700, exist_ok=True)
    tmp = tmp_dir / f"plain-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return store_file(store, tmp, chunk_secret)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotTaken:
    """A snapshot in the local store, not yet uploaded or published."""

    link: Link  # the snapshot record's link
    snapshot: Snapshot
    entries: tuple[Entry, ...]
    files_read: int  # files whose contents were read (changed or new)
    bytes_read: int
    new_chunks: int  # chunks the local store did not hold before (files, manifest and record)
    skipped: int  # paths neither file, directory nor symlink (sockets, devices, fifos), or gone mid-scan


def _walk(top: Path) -> Iterator[tuple[bytes, Path, os.stat_result]]:
    """Every path under ``top``: (relative path bytes, full path, lstat), parents before children."""
    pending = [(b"", top)]
    while pending:
        rel, directory = pending.pop()
        with os.scandir(directory) as it:
            names = sorted(it, key=lambda e: e.name)
        for item in names:
            path = (rel + b"/" if rel else b"") + os.fsencode(item.name)
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield path, Path(item.path), st
            if stat.S_ISDIR(st.st_mode):
                pending.append((path, Path(item.path)))


@dataclass(slots=True)
class _Scan:
    """What a scan has found so far: entries, index rows, counts."""

    now_ns: int
    on_file: Callable[[int], None] | None
    entries: list[Entry] = field(default_factory=list)
    recorded: list[tuple[bytes, FileStamp, Link]] = field(default_factory=list)
    files_read: int = 0
    bytes_read: int = 0
    new_chunks: int = 0
    skipped: int = 0

    def file(self, rel: bytes, mode: int, stamp: FileStamp, link: Link) -> None:
        if self.now_ns - stamp.mtime_ns >= RACY_NS:
            self.recorded.append((rel, stamp, link))
        self.entries.append(Entry(path=rel, kind=EntryKind.FILE, mode=mode, mtime_ns=stamp.mtime_ns,
                                  size=stamp.size, link=link))

    def file_read(self, rel: bytes, mode: int, stamp: FileStamp,
                  read: Callable[[], tuple[AddResult, FileStamp]]) -> None:
        """Take the result of reading a file (a future's ``result``, or the read itself)."""
        try:
            added, after = read()
        except FileNotFoundError:
            self.skipped += 1
            return
        except OSError as exc:
            raise FolderError(f"cannot read {os.fsdecode(rel)}: {exc.strerror}") from None
        self.files_read += 1
        self.bytes_read += added.size
        self.new_chunks += added.new_chunks
        if self.on_file is not None:
            self.on_file(added.size)
        if after == stamp:
            self.file(rel, mode, stamp, added.link)
        else:
            # Changed while read: the entry says what was stored, and the index keeps
            # nothing, so the next scan reads the file again.
            self.entries.append(Entry(path=rel, kind=EntryKind.FILE, mode=mode, mtime_ns=after.mtime_ns,
                                      size=added.size, link=added.link))


def _read(store: ChunkStore, path: Path, secret: bytes) -> tuple[AddResult, FileStamp]:
    added = store_file(store, path, secret)
    return added, FileStamp.of(os.lstat(path))


def take_snapshot(store: ChunkStore, index: FolderIndex, directory: Path, cap: WriteCap, *,
                  previous: tuple[Link, Snapshot] | None, now_ns: int, tmp_dir: Path,
                  on_file: Callable[[int], None] | None = None) -> SnapshotTaken:
    """Scan ``directory`` into the store and build the snapshot that follows ``previous``.

    Files of at most ``SMALL_FILE_BYTES`` are stored ``SMALL_FILE_THREADS`` at a
    time (their cost is the store's per-chunk fsyncs, which overlap); larger
    ones one at a time (``add_file`` already runs several threads each).

    Raises:
        FolderError: ``directory`` is not a directory or a file cannot be read.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FolderError(f"not a directory: {directory}")
    folder = cap.public_key
    secret = cap.chunk_secret
    known = index.files(folder)
    scan = _Scan(now_ns, on_file)
    reading: deque[tuple[bytes, int, FileStamp, Future[tuple[AddResult, FileStamp]]]] = deque()
    with ThreadPoolExecutor(max_workers=SMALL_FILE_THREADS, thread_name_prefix="mu-folder-read") as pool:
        try:
            for rel, full, st in _walk(directory):
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISDIR(st.st_mode):
                    scan.entries.append(Entry(path=rel, kind=EntryKind.DIR, mode=mode, mtime_ns=st.st_mtime_ns))
                elif stat.S_ISLNK(st.st_mode):
                    try:
                        raw = os.fsencode(os.readlink(full))
                    except FileNotFoundError:
                        scan.skipped += 1
                        continue
                    scan.entries.append(Entry(path=rel, kind=EntryKind.SYMLINK, mode=mode, mtime_ns=st.st_mtime_ns,
                                              size=len(raw), target=raw))
                elif stat.S_ISREG(st.st_mode):
                    stamp = FileStamp.of(st)
                    seen = known.get(rel)
                    if seen is not None and seen[0] == stamp:
                        scan.file(rel, mode, stamp, seen[1])
                    elif st.st_size <= SMALL_FILE_BYTES:
                        reading.append((rel, mode, stamp, pool.submit(_read, store, full, secret)))
                        if len(reading) > SMALL_FILES_AHEAD:
                            _rel, _mode, _stamp, future = reading.popleft()
                            scan.file_read(_rel, _mode, _stamp, future.result)
                    else:
                        scan.file_read(rel, mode, stamp, functools.partial(_read, store, full, secret))
                else:
                    scan.skipped += 1
            while reading:
                _rel, _mode, _stamp, future = reading.popleft()
                scan.file_read(_rel, _mode, _stamp, future.result)
        finally:
            for *_, future in reading:
                future.cancel()
    manifest = store_bytes(store, encode_manifest(scan.entries), secret, tmp_dir)
    ordered = tuple(sorted(scan.entries, key=lambda e: e.path))
    snapshot = Snapshot.of(ordered, manifest=manifest.link, previous=previous[1] if previous else None,
                           previous_link=previous[0] if previous else None, time_ns=now_ns)
    record = store_bytes(store, snapshot.encode(), secret, tmp_dir)
    index.record_files(folder, scan.recorded, keep={e.path for e in ordered if e.kind is EntryKind.FILE})
    return SnapshotTaken(link=record.link, snapshot=snapshot, entries=ordered, files_read=scan.files_read,
                         bytes_read=scan.bytes_read, skipped=scan.skipped,
                         new_chunks=scan.new_chunks + manifest.new_chunks + record.new_chunks)
