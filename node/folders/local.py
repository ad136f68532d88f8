"""The folder operations on a store and an index, shared by both CLI backends (specs/folders.md §10, §11).

Each takes the folder's newest record (a :class:`Head`, from the DHT or the
index) and an ``ensure`` callback that brings a file's chunks into the
store before it is read: a no-op on the local store, a paid fetch through
a running node (node/folders/network.py runs these functions on a worker
thread and fetches from there).  Nothing here publishes: the caller does,
once the snapshot's chunks are where they should be.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from node.folders.history import Version, choose, history, load_manifest, load_snapshot
from node.folders.index import FolderIndex, Head
from node.folders.restore import WriteFile, restore_tree, select
from node.folders.retention import split
from node.folders.results import DiffReport, LogEntry, RestoreReport, SnapshotReport
from node.folders.snapshot import SnapshotTaken, take_snapshot
from node.store import ChunkStore
from protocol.chunks import Link
from protocol.folders import Changes, Entry, ReadCap, Snapshot, WriteCap, decode_record_value, diff

Ensure = Callable[[Link], None]


def _nothing_to_fetch(link: Link) -> None:
    """The local store has what it has: a missing chunk is reported by the read that needs it."""


def head_link(cap: ReadCap, head: Head) -> Link:
    """The snapshot link a folder record's value names (specs/folders.md §7 Record value)."""
    return decode_record_value(cap.read_key, head.value)


def newest_head(index: FolderIndex, folder: bytes, resolved: Head | None) -> Head | None:
    """The higher of the record just resolved and the one the index holds; the index keeps it."""
    if resolved is not None:
        index.record_head(folder, resolved)
    return index.head(folder)


def _versions(store: ChunkStore, cap: ReadCap, head: Head | None, ensure: Ensure) -> list[Version]:
    """The snapshots the retention policy keeps, newest first (specs/folders.md §9 Retention policy)."""
    return list(split(history(store, head_link(cap, head), ensure)).kept) if head is not None else []


def _entries(store: ChunkStore, version: Version, ensure: Ensure) -> tuple[Entry, ...]:
    ensure(version.snapshot.manifest)
    return load_manifest(store, version.snapshot)


def snapshot_folder(store: ChunkStore, index: FolderIndex, directory: Path, cap: WriteCap, head: Head | None, *,
                    now_ns: int, tmp_dir: Path, ensure: Ensure = _nothing_to_fetch,
                    on_file: Callable[[int], None] | None = None) -> tuple[SnapshotTaken, Changes]:
    """Take the snapshot after ``head`` into the store; say what changed since."""
    previous: tuple[Link, Snapshot] | None = None
    old: tuple[Entry, ...] = ()
    if head is not None:
        link = head_link(cap.read_cap, head)
        ensure(link)
        snapshot = load_snapshot(store, link)
        old = _entries(store, Version(link, snapshot), ensure)
        previous = (link, snapshot)
    taken = take_snapshot(store, index, directory, cap, previous=previous, now_ns=now_ns, tmp_dir=tmp_dir,
                          on_file=on_file)
    return taken, diff(old, taken.entries)


def unsent_history(store: ChunkStore, index: FolderIndex, previous: Link | None) -> list[Link]:
    """Links of older snapshots (records, manifests, files) never sent: those taken without a node.

    Sent oldest first, so that a reader following ``previous`` links finds every one.
    """
    pending: list[Link] = []
    link = previous
    while link is not None and not index.root_sent(link.root):
        snapshot = load_snapshot(store, link)
        files = [e.link for e in load_manifest(store, snapshot) if e.link is not None]
        pending[:0] = files + [snapshot.manifest, link]
        link = snapshot.previous
    return pending


def snapshot_report(taken: SnapshotTaken, changes: Changes, seq: int, *, chunks_uploaded: int = 0,
                    list_chunks_uploaded: int = 0, chunks_already_sent: int = 0, under_replicated: int = 0,
                    published_to: int | None = None) -> SnapshotReport:
    s = taken.snapshot
    return SnapshotReport(number=s.number, seq=seq, time_ns=s.time_ns, files=s.files, dirs=s.dirs,
                          symlinks=s.symlinks, size=s.size, files_read=taken.files_read, bytes_read=taken.bytes_read,
                          new_chunks=taken.new_chunks, skipped=taken.skipped, added=len(changes.added),
                          removed=len(changes.removed), changed=len(changes.changed), chunks_uploaded=chunks_uploaded,
                          list_chunks_uploaded=list_chunks_uploaded, chunks_already_sent=chunks_already_sent, under_replicated=under_replicated,
                          published_to=published_to)


def folder_log(store: ChunkStore, cap: ReadCap, head: Head | None, *,
               ensure: Ensure = _nothing_to_fetch) -> list[LogEntry]:
    """Every kept snapshot, newest first, with what changed from the kept one before it.

    Pruned snapshots are left out; their count is the newest number less the lines.
    """
    versions = _versions(store, cap, head, ensure)
    lines = []
    older: tuple[Entry, ...] = ()
    for version in reversed(versions):
        entries = _entries(store, version, ensure)
        changes = diff(older, entries)
        s = version.snapshot
        lines.append(LogEntry(number=s.number, time_ns=s.time_ns, files=s.files, dirs=s.dirs, symlinks=s.symlinks,
                              size=s.size, added=len(changes.added), removed=len(changes.removed),
                              changed=len(changes.changed)))
        older = entries
    return lines[::-1]


def folder_restore(store: ChunkStore, cap: ReadCap, head: Head | None, dest: Path, *, number: int | None = None,
                   at_ns: int | None = None, sub: bytes | None = None, ensure: Ensure = _nothing_to_fetch,
                   on_file: Callable[[int], None] | None = None, write: WriteFile | None = None) -> RestoreReport:
    """Write the chosen snapshot (or its ``sub`` path) under ``dest``.

    ``ensure`` brings the snapshot's own chunks into ``store``; each file is
    then written by ``write`` (see ``restore_tree``) or, without it, ensured
    into ``store`` and written out of it.

    Raises:
        LookupError: no snapshot matches ``number`` / ``at_ns``.
        FolderError: ``sub`` is not in the snapshot, or a path in ``dest`` is taken by another kind.
    """
    version = choose(_versions(store, cap, head, ensure), number=number, at_ns=at_ns)
    chosen = select(_entries(store, version, ensure), sub)
    if write is None:
        for entry in chosen:
            if entry.link is not None:
                ensure(entry.link)
    done = restore_tree(store, chosen, dest, on_file=on_file, write=write)
    return RestoreReport(number=version.snapshot.number, time_ns=version.snapshot.time_ns, files=done.files,
                         dirs=done.dirs, symlinks=done.symlinks, size=done.bytes, already=done.already)


def folder_diff(store: ChunkStore, cap: ReadCap, head: Head | None, a: int | None, b: int | None, *,
                ensure: Ensure = _nothing_to_fetch) -> DiffReport:
    """Paths changed from snapshot ``a`` (default: the kept one before ``b``) to ``b`` (default: the newest)."""
    versions = _versions(store, cap, head, ensure)
    new = choose(versions, number=b)
    if a is None:  # the kept snapshot before ``b``, or none (0)
        older = [v for v in versions if v.snapshot.number < new.snapshot.number]
        old_number = older[0].snapshot.number if older else 0
    else:
        old_number = a
    old_entries = _entries(store, choose(versions, number=old_number), ensure) if old_number >= 1 else ()
    changes = diff(old_entries, _entries(store, new, ensure))
    return DiffReport(a=old_number, b=new.snapshot.number, added=tuple(map(os.fsdecode, changes.added)),
                      removed=tuple(map(os.fsdecode, changes.removed)),
                      changed=tuple(map(os.fsdecode, changes.changed)))
