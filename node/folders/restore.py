"""Writing a snapshot's tree out of the local store (specs/folders.md §11 Restoring).

Per file atomic: the plaintext goes to a temp name in the target directory
(``get_file`` writes and fsyncs it), gets its mode and mtime there, and is
renamed over the final name only then; nothing half-written or with wrong
metadata ever sits under a final name.  A kill leaves at most temp files
(``.*.mu-restore-*``), which the next run removes, and files already
restored (same size, mode and mtime_ns) are not written again.  Directory
modes and mtimes are set last, deepest first, since writing into a
directory changes its mtime and a read-only mode would block the writes.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.files.local import get_file
from node.folders.snapshot import FolderError
from node.store import ChunkStore
from protocol.folders import Entry, EntryKind

TEMP_MARK = ".mu-restore-"
# Temp names this module and get_file (``.NAME.mu-partial-HEX``) leave behind when killed.
_LEFTOVER = re.compile(r"^\..*\.mu-(restore|partial)-[0-9a-f]+$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Restored:
    """What a restore wrote."""

    files: int
    dirs: int
    symlinks: int
    bytes: int
    already: int  # files found restored already (a rerun after a kill)


def select(entries: tuple[Entry, ...], sub: bytes | None) -> list[Entry]:
    """The entries at and under ``sub`` (all with ``sub`` None), with the directories above it."""
    if sub is None:
        return list(entries)
    sub = sub.strip(b"/")
    above = set()
    parts = sub.split(b"/")
    for i in range(1, len(parts)):
        above.add(b"/".join(parts[:i]))
    chosen = [e for e in entries if e.path == sub or e.path.startswith(sub + b"/") or e.path in above]
    if not any(e.path == sub for e in chosen):
        raise FolderError(f"the snapshot has no path {os.fsdecode(sub)!r}")
    return chosen


def _remove_leftovers(dest: Path) -> None:
    for directory, dirnames, filenames in os.walk(dest):
        for name in filenames + dirnames:
            if _LEFTOVER.match(name):
                path = os.path.join(directory, name)
                if os.path.islink(path) or not os.path.isdir(path):
                    os.unlink(path)


def _temp_beside(final: Path) -> Path:
    return final.parent / f".{final.name[:100]}{TEMP_MARK}{secrets.token_hex(4)}"


def _ensure_dir(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        os.mkdir(path, 0o700)
        return
    if not stat.S_ISDIR(st.st_mode):
        raise FolderError(f"{path} exists and is not a directory")
    os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)  # writable while we fill it


def _is_restored(final: Path, entry: Entry) -> bool:
    try:
        st = os.lstat(final)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise FolderError(f"{final} is a directory; the snapshot has a file there")
    return (stat.S_ISREG(st.st_mode) and st.st_size == entry.size and st.st_mtime_ns == entry.mtime_ns
            and stat.S_IMODE(st.st_mode) == entry.mode)


def restore_tree(store: ChunkStore, entries: list[Entry], dest: Path, *,
                 on_file: Callable[[int], None] | None = None) -> Restored:
    """Write ``entries`` under ``dest`` (created if missing); their chunks must be in ``store``.

    Raises:
        FolderError: a path is taken by something of another kind.
        node.store.ChunkNotFound, protocol.chunks.IntegrityError: from reading a file.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest)
    files = dirs = links = size = already = 0
    touched: set[Path] = {dest}
    for entry in entries:  # sorted by path: parents first
        final = dest / os.fsdecode(entry.path)
        if entry.kind is EntryKind.DIR:
            _ensure_dir(final)
            dirs += 1
            continue
        touched.add(final.parent)
        if entry.kind is EntryKind.SYMLINK:
            assert entry.target is not None
            tmp = _temp_beside(final)
            os.symlink(entry.target, tmp)
            os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)
            if os.path.isdir(final) and not os.path.islink(final):
                os.unlink(tmp)
                raise FolderError(f"{final} is a directory; the snapshot has a symlink there")
            os.replace(tmp, final)
            links += 1
            continue
        assert entry.link is not None
        if _is_restored(final, entry):
            already += 1
            continue
        tmp = _temp_beside(final)
        try:
            get_file(store, entry.link, tmp)
            os.chmod(tmp, entry.mode)
            os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        files += 1
        size += entry.size
        if on_file is not None:
            on_file(entry.size)
    for entry in reversed(entries):  # deepest first: children no longer change a directory's mtime
        if entry.kind is EntryKind.DIR:
            final = dest / os.fsdecode(entry.path)
            os.chmod(final, entry.mode)
            os.utime(final, ns=(entry.mtime_ns, entry.mtime_ns))
    for directory in touched:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # the renames are durable
        finally:
            os.close(fd)
    return Restored(files=files, dirs=dirs, symlinks=links, bytes=size, already=already)
