"""Writing a snapshot's tree (specs/folders.md §11 Restoring).

Per file atomic: the plaintext goes to a temp name in the target directory
(``get_file`` writes and fsyncs it out of the local store, or through a node
the fetch writes it as ``mu get`` does), gets its mode and mtime there, and is
renamed over the final name only then; nothing half-written or with wrong
metadata ever sits under a final name.  A kill leaves at most temp files
(``.*.mu-restore-*``, and a fetch's ``.mu-part`` of one), which the next run
removes, and files already restored (same size, mode and mtime_ns) are not
written again.  A file whose content was written earlier in the same run is
copied from there, not fetched again.  Directory
modes and mtimes are set last, deepest first, since writing into a
directory changes its mtime and a read-only mode would block the writes.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from node.files.local import get_file
from node.folders.snapshot import FolderError
from node.store import ChunkStore
from protocol.chunks import Link
from protocol.folders import Entry, EntryKind

#: Writes the plaintext of a link's file to a path, durably (fsynced).
WriteFile = Callable[[Link, Path], None]

TEMP_MARK = ".mu-restore-"
# Temp names this module, get_file (``.NAME.mu-partial-HEX``) and a fetch into one of ours
# (``.NAME.mu-restore-HEX.mu-part``) leave behind when killed.
_LEFTOVER = re.compile(r"^\..*\.mu-(restore|partial)-[0-9a-f]+(\.mu-part)?$")


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


def _copy_durably(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "xb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
        out.flush()
        os.fsync(out.fileno())


def restore_tree(store: ChunkStore, entries: list[Entry], dest: Path, *,
                 on_file: Callable[[int], None] | None = None, write: WriteFile | None = None) -> Restored:
    """Write ``entries`` under ``dest`` (created if missing).

    ``write`` puts a file's plaintext at a temp path; by default ``get_file``
    out of ``store``, which must then hold every chunk.

    Raises:
        FolderError: a path is taken by something of another kind.
        node.store.ChunkNotFound, protocol.chunks.IntegrityError: from reading a file.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest)
    if write is None:
        def write(link: Link, path: Path) -> None:
            get_file(store, link, path)
    files = dirs = links = size = already = 0
    touched: set[Path] = {dest}
    written: dict[bytes, Path] = {}  # a file's root -> where this run wrote it
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
            earlier = written.get(entry.link.root)
            try:
                if earlier is None:
                    raise FileNotFoundError
                _copy_durably(earlier, tmp)
            except OSError:  # none yet, or no longer readable (its mode, a change since)
                tmp.unlink(missing_ok=True)
                write(entry.link, tmp)
            os.chmod(tmp, entry.mode)
            os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        written[entry.link.root] = final
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
