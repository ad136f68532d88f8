"""Writing a snapshot's tree (specs/folders.md §11 Restoring).

Per file atomic: the plaintext goes to a temp name in the target directory
(``get_file`` writes and fsyncs it out of the local store, or through a node
the fetch writes it as ``mu get`` does), gets its mode and mtime there, and is
renamed over the final name only then; nothing half-written or with wrong
metadata ever sits under a final name.  A kill leaves at most temp files
(``.*.mu-restore-*``), which the next run removes, and a fetch's part file
(``.NAME.mu-restore-HEX.mu-part``, HEX from the file's content), which the
next run resumes from; files already restored (same size, mode and mtime_ns)
are not written again.  A file whose content was written earlier in the same run is
copied from there, not fetched again.  Directory
modes and mtimes are set last, deepest first, since writing into a
directory changes its mtime and a read-only mode would block the writes.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from node.files.local import get_file
from node.folders.snapshot import FolderError
from node.store import ChunkStore
from protocol.chunks import Link
from protocol.folders import Entry, EntryKind

#: Writes the plaintext of a link's file to a path, durably (fsynced).
WriteFile = Callable[[Link, Path], None]
#: Through a node, files of at most SMALL_FILE bytes are fetched PARALLEL_FILES at a time: each
#: waits mostly on round trips and fsyncs, which then overlap (a bigger file's fetch pipelines its
#: own chunks, and several at once would hold several fetch windows of chunks in memory).
SMALL_FILE = 1024 * 1024
PARALLEL_FILES = 8

TEMP_MARK = ".mu-restore-"
# Temp names this module, get_file (``.NAME.mu-partial-HEX``) and a fetch into one of ours
# (``.NAME.mu-restore-HEX.mu-part``) leave behind when killed.
_LEFTOVER = re.compile(r"^\..*\.mu-(restore|partial)-[0-9a-f]+(\.mu-part)?$")
PART_SUFFIX = ".mu-part"  # node/files/fetcher.py's: what a fetch resumes from


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


def _remove_leftovers(dest: Path, *, parts: bool = True) -> None:
    """Remove the temp names a killed run left; with ``parts`` False, not a fetch's part file (resumed)."""
    for directory, dirnames, filenames in os.walk(dest):
        for name in filenames + dirnames:
            if _LEFTOVER.match(name) and (parts or not name.endswith(PART_SUFFIX)):
                path = os.path.join(directory, name)
                if os.path.islink(path) or not os.path.isdir(path):
                    os.unlink(path)


def _temp_beside(final: Path, content: bytes | None = None) -> Path:
    """A temp name beside ``final``: random, or for a file named by its ``content`` (its link's root) the
    same in every run, so that a fetch killed into it is resumed by the next (its part file kept)."""
    mark = content[:8].hex() if content is not None else secrets.token_hex(4)
    return final.parent / f".{final.name[:100]}{TEMP_MARK}{mark}"


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


class _Files:
    """Writes files (each atomically: temp name, mode, mtime, rename) and counts them."""

    def __init__(self, write: WriteFile, on_file: Callable[[int], None] | None) -> None:
        self.write = write
        self.on_file = on_file
        self.count = 0
        self.bytes = 0

    def put(self, entry: Entry, final: Path, source: Path | None = None) -> None:
        """Write ``entry`` at ``final``: copied from ``source`` (a file with the same content) if it can be read."""
        assert entry.link is not None
        tmp = _temp_beside(final, entry.link.root)
        try:
            try:
                if source is None:
                    raise FileNotFoundError
                _copy_durably(source, tmp)
            except OSError:  # none, or no longer readable (its mode, a change since)
                tmp.unlink(missing_ok=True)
                self.write(entry.link, tmp)
            os.chmod(tmp, entry.mode)
            os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def run(self, jobs: Sequence[tuple[Entry, Path] | tuple[Entry, Path, Path]], parallel: int) -> None:
        """``put`` every job, ``parallel`` at a time; counted (and ``on_file`` called) in this thread.

        On a failure no job starts after it, those running finish, and the first error is raised.
        """
        if parallel <= 1 or len(jobs) <= 1:
            for job in jobs:
                self.put(*job)
                self._done(job[0])
            return
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="mu-restore") as pool:
            running = {pool.submit(self.put, *job): job[0] for job in jobs}
            for done in as_completed(running):
                try:
                    done.result()
                except BaseException as exc:  # noqa: BLE001 (re-raised below, after the rest stopped)
                    if failure is None:
                        failure = exc
                        for future in running:
                            future.cancel()  # those not started
                    continue
                self._done(running[done])
        if failure is not None:
            raise failure

    def _done(self, entry: Entry) -> None:
        self.count += 1
        self.bytes += entry.size
        if self.on_file is not None:
            self.on_file(entry.size)


def restore_tree(store: ChunkStore, entries: list[Entry], dest: Path, *,
                 on_file: Callable[[int], None] | None = None, write: WriteFile | None = None) -> Restored:
    """Write ``entries`` under ``dest`` (created if missing).

    ``write`` puts a file's plaintext at a temp path; by default ``get_file``
    out of ``store``, which must then hold every chunk.  Directories and
    symlinks come first, then the files: with ``write`` given (a fetch),
    files of at most ``SMALL_FILE`` bytes ``PARALLEL_FILES`` at a time, then
    the bigger ones one by one, then those whose content an earlier one had.

    Raises:
        FolderError: a path is taken by something of another kind.
        node.store.ChunkNotFound, protocol.chunks.IntegrityError: from reading a file.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest, parts=False)
    parallel = PARALLEL_FILES if write is not None else 1
    if write is None:
        def write(link: Link, path: Path) -> None:
            get_file(store, link, path)
    dirs = links = already = 0
    touched: set[Path] = {dest}
    firsts: dict[bytes, tuple[Entry, Path]] = {}  # a content's root -> the file that writes it
    copies: list[tuple[Entry, Path, Path]] = []  # files whose content another one writes, and that one
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
        elif entry.link.root in firsts:
            copies.append((entry, final, firsts[entry.link.root][1]))
        else:
            firsts[entry.link.root] = (entry, final)
    files = _Files(write, on_file)
    small = [job for job in firsts.values() if job[0].size <= SMALL_FILE]
    files.run(small, parallel)
    files.run([job for job in firsts.values() if job[0].size > SMALL_FILE], 1)
    files.run(copies, 1)
    _remove_leftovers(dest)  # part files no file of this snapshot resumed
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
    return Restored(files=files.count, dirs=dirs, symlinks=links, bytes=files.bytes, already=already)
