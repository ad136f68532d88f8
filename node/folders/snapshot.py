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

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


def take_snapshot(store: ChunkStore, index: FolderIndex, directory: Path, cap: WriteCap, *,
                  previous: tuple[Link, Snapshot] | None, now_ns: int, tmp_dir: Path,
                  on_file: Callable[[int], None] | None = None) -> SnapshotTaken:
    """Scan ``directory`` into the store and build the snapshot that follows ``previous``.

    Raises:
        FolderError: ``directory`` is not a directory or a file cannot be read.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FolderError(f"not a directory: {directory}")
    folder = cap.public_key
    secret = cap.chunk_secret
    known = index.files(folder)
    entries: list[Entry] = []
    recorded: list[tuple[bytes, FileStamp, Link]] = []
    files_read = bytes_read = new_chunks = skipped = 0
    for rel, full, st in _walk(directory):
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            entries.append(Entry(path=rel, kind=EntryKind.DIR, mode=mode, mtime_ns=st.st_mtime_ns))
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(full)
            except FileNotFoundError:
                skipped += 1
                continue
            raw = os.fsencode(target)
            entries.append(Entry(path=rel, kind=EntryKind.SYMLINK, mode=mode, mtime_ns=st.st_mtime_ns,
                                 size=len(raw), target=raw))
        elif stat.S_ISREG(st.st_mode):
            stamp = FileStamp.of(st)
            seen = known.get(rel)
            if seen is not None and seen[0] == stamp:
                link = seen[1]
            else:
                try:
                    added = store_file(store, full, secret)
                    after = FileStamp.of(os.lstat(full))
                except FileNotFoundError:
                    skipped += 1
                    continue
                except OSError as exc:
                    raise FolderError(f"cannot read {full}: {exc.strerror}") from None
                files_read += 1
                bytes_read += added.size
                new_chunks += added.new_chunks
                link = added.link
                if on_file is not None:
                    on_file(added.size)
                if after != stamp:
                    # Changed while read: what was stored is some state of the file; the entry says
                    # what was stored, and the index keeps nothing, so the next scan reads it again.
                    stamp = FileStamp(added.size, after.mtime_ns, after.ino, after.ctime_ns)
                    entries.append(Entry(path=rel, kind=EntryKind.FILE, mode=mode, mtime_ns=stamp.mtime_ns,
                                         size=added.size, link=link))
                    continue
            if now_ns - stamp.mtime_ns >= RACY_NS:
                recorded.append((rel, stamp, link))
            entries.append(Entry(path=rel, kind=EntryKind.FILE, mode=mode, mtime_ns=stamp.mtime_ns,
                                 size=stamp.size, link=link))
        else:
            skipped += 1
    manifest = store_bytes(store, encode_manifest(entries), secret, tmp_dir)
    ordered = tuple(sorted(entries, key=lambda e: e.path))
    snapshot = Snapshot.of(ordered, manifest=manifest.link, previous=previous[1] if previous else None,
                           previous_link=previous[0] if previous else None, time_ns=now_ns)
    record = store_bytes(store, snapshot.encode(), secret, tmp_dir)
    new_chunks += manifest.new_chunks + record.new_chunks
    index.record_files(folder, recorded, keep={e.path for e in ordered if e.kind is EntryKind.FILE})
    return SnapshotTaken(link=record.link, snapshot=snapshot, entries=ordered, files_read=files_read,
                         bytes_read=bytes_read, new_chunks=new_chunks, skipped=skipped)
