"""Looking at a synced folder on disk: one path, or the whole tree (specs/sync.md §Change detection).

A ``ScanRecord`` is what git's index keeps to skip unchanged files without
reading them: kind, size, mtime and inode (plus the mode, which sync
carries).  Two records that differ mean the path changed; equal records
mean it did not, unless something wrote it and reset its mtime, which the
periodic rescan cannot see either (the limit git and Syncthing share).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from protocol.sync import EntryKind, SyncError, check_path

from .ignore import IgnoreRules

# Most entries one scan reports: the bound of the format's state
# (protocol.sync.MAX_ENTRIES); a larger tree is refused, not half-synced.
MAX_SCAN_ENTRIES = 1_000_000


class ScanError(OSError):
    """The folder could not be scanned (its root is gone, or the tree is over the bound)."""


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """What one look at a path saw (``os.lstat``: a symlink is not followed)."""

    kind: EntryKind
    size: int
    mtime_ns: int
    inode: int
    mode: int

    @classmethod
    def of(cls, st: os.stat_result) -> ScanRecord | None:
        """The record of a regular file, directory or symlink; None for anything else (fifo, socket, device)."""
        if stat.S_ISREG(st.st_mode):
            kind = EntryKind.FILE
        elif stat.S_ISDIR(st.st_mode):
            kind = EntryKind.DIRECTORY
        elif stat.S_ISLNK(st.st_mode):
            kind = EntryKind.SYMLINK
        else:
            return None
        size = st.st_size if kind is not EntryKind.DIRECTORY else 0
        # A directory's mtime changes whenever an entry is added or removed
        # inside it: that is the children's change, not the directory's.
        mtime = st.st_mtime_ns if kind is not EntryKind.DIRECTORY else 0
        return cls(kind, size, mtime, st.st_ino, stat.S_IMODE(st.st_mode))

    def settled_with(self, other: ScanRecord | None) -> bool:
        """True if a second look saw the same size and mtime: nothing is still writing the path."""
        return other is not None and (self.kind, self.size, self.mtime_ns, self.inode) == (
            other.kind, other.size, other.mtime_ns, other.inode)


def look(root: Path, path: str) -> ScanRecord | None:
    """The record of ``root/path`` now; None if it does not exist or is not a file, directory or symlink.

    A path whose way there goes through a symlink loop does not exist either.
    """
    try:
        return ScanRecord.of(os.lstat(root / path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


def _syncable(path: str, unsyncable: set[str] | None) -> bool:
    """True if ``path`` is a valid sync path (specs/sync.md §Paths); else noted in ``unsyncable``."""
    try:
        check_path(path)
    except SyncError:
        if unsyncable is not None:
            unsyncable.add(path)
        return False
    return True


def covered(path: str, unreadable: Mapping[str, str]) -> bool:
    """True if ``path`` is an unreadable path or lies under one ('' covers the whole folder)."""
    if not unreadable:
        return False
    if "" in unreadable or path in unreadable:
        return True
    parts = path.split("/")
    return any("/".join(parts[:i]) in unreadable for i in range(1, len(parts)))


def scan_tree(root: Path, rules: IgnoreRules, under: str = "", *,
              unsyncable: set[str] | None = None, unreadable: dict[str, str] | None = None) -> dict[str, ScanRecord]:
    """Every synced path at or below ``under`` ('' for the whole folder), with its record.

    Ignored directories are not entered.  A name sync cannot carry (not
    UTF-8, a backslash: specs/sync.md §Paths) is left out, with what is
    under it, and added to ``unsyncable`` so the caller can say so.  A
    directory that cannot be listed or a path that cannot be looked at
    (permission denied) goes into ``unreadable`` with the reason: what is
    under it is unknown, not gone (specs/sync.md §8), and the caller must
    not take its absence for a delete.  Without ``unreadable`` that error
    is raised.  Blocking: run it in a thread.  Raises ScanError if the root
    is not a directory or the tree holds more than MAX_SCAN_ENTRIES paths.
    """
    if not root.is_dir():
        raise ScanError(f"the synced folder {root} is not a directory")
    found: dict[str, ScanRecord] = {}

    def denied(path: str, exc: PermissionError) -> None:
        if unreadable is None:
            raise exc
        unreadable[path] = exc.strerror or str(exc)

    if under:
        try:
            record = look(root, under)
        except PermissionError as exc:
            denied(under, exc)
            return found
        if (record is None or rules.ignores(under, is_dir=record.kind is EntryKind.DIRECTORY)
                or not _syncable(under, unsyncable)):
            return found
        found[under] = record
        if record.kind is not EntryKind.DIRECTORY:
            return found
    pending = [under]
    while pending:
        directory = pending.pop()
        try:
            listing = list(os.scandir(root / directory))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we looked: the next event or rescan sees it gone
        except PermissionError as exc:
            denied(directory, exc)
            continue
        for item in listing:
            path = f"{directory}/{item.name}" if directory else item.name
            try:
                record = ScanRecord.of(item.stat(follow_symlinks=False))
            except FileNotFoundError:
                continue
            except PermissionError as exc:  # a directory listed but not searchable
                if _syncable(path, unsyncable) and not rules.ignores(path, is_dir=False):
                    denied(path, exc)
                continue
            if (record is None or rules.ignores(path, is_dir=record.kind is EntryKind.DIRECTORY)
                    or not _syncable(path, unsyncable)):
                continue
            found[path] = record
            if len(found) > MAX_SCAN_ENTRIES:
                raise ScanError(f"the synced folder {root} holds more than {MAX_SCAN_ENTRIES} entries")
            if record.kind is EntryKind.DIRECTORY:
                pending.append(path)
    return found
