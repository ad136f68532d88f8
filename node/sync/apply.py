"""Applying a remote change to the disk without losing a local one (specs/sync.md §Applying a plan).

A new version is written to a temporary file in the target's directory,
fsynced, and renamed over the final name, so no half-written file ever
carries a synced name.  Just before the rename the target is looked at
again: if it is no longer what the plan saw (a local edit raced the remote
update), the local file is first renamed to a conflict copy, as the merge
would have named it had it seen the edit.  The window left is the time
between that last look and the rename, as in Syncthing.

Nothing here follows a symlink: an action whose path goes through one on
disk (or through a file) is not carried out, a symlink's own mtime is set
and never its target's, and no mode is given to a symlink's target, so a
synced symlink can never make a write, delete, chmod or utime land outside
the folder (specs/sync.md §9).

Blocking functions: the node runs them with ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from protocol.sync import MAX_CONFLICT_ATTEMPTS, EntryKind, conflict_name

from .ignore import TEMP_PREFIX
from .scan import ScanRecord, look

log = logging.getLogger("mu.sync")


class ApplyError(OSError):
    """A change could not be applied; the disk holds what it held before, plus at most a conflict copy."""


@dataclass(frozen=True, slots=True)
class Applied:
    """``path`` now holds the remote version (``record``: how it looks on disk, for the scan index).

    ``kept_as`` names the conflict copy the local version was renamed to
    when it had changed since the plan saw it (None: it had not).
    """

    path: str
    record: ScanRecord | None
    kept_as: str | None


def _inside(root: Path, path: str) -> bool:
    """Whether every directory on the way from ``root`` to ``path`` that exists is a real one (``lstat``).

    A symlink on the way would take the action out of the folder, to
    wherever it points; a file there leaves no way through.  Either way
    the action is not carried out (logged): the next scan records the disk
    as it is, and the local version wins (specs/sync.md §9).
    """
    here = root
    for part in path.split("/")[:-1]:
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            return True  # made below as real directories
        if not stat.S_ISDIR(mode):
            log.warning("not applied: %r goes through %r, which is %s", path, here.relative_to(root).as_posix(),
                        "a symlink" if stat.S_ISLNK(mode) else "not a directory")
            return False
    return True


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside_if_changed(root: Path, path: str, expected: ScanRecord | None, device: bytes) -> str | None:
    """Rename ``root/path`` to a free conflict name if it is not what ``expected`` says; return that name."""
    now = look(root, path)
    if now is None or now == expected:
        # Gone (a local delete that did not see this version: the version
        # wins) or unchanged: nothing to keep.
        return None
    return _set_aside(root, path, now, device)


def _set_aside(root: Path, path: str, now: ScanRecord, device: bytes) -> str:
    """Rename ``root/path`` (which looks like ``now``) to the first free conflict name; return that name."""
    # A directory's record keeps no mtime (it moves with its children): its name takes the one on disk.
    mtime_ns = now.mtime_ns if now.kind is not EntryKind.DIRECTORY else os.lstat(root / path).st_mtime_ns
    for attempt in range(1, MAX_CONFLICT_ATTEMPTS + 1):
        name = conflict_name(path, mtime_ns, device, attempt)
        if look(root, name) is None:
            os.rename(root / path, root / name)
            return name
    raise ApplyError(f"no free conflict name for {path!r} after {MAX_CONFLICT_ATTEMPTS} attempts")


def _clear_replaced(root: Path, path: str, expected: ScanRecord | None, device: bytes) -> str | None:
    """Make way at ``path`` for a version of another kind; return the conflict name of what was kept.

    A file or symlink the plan saw replaced by a directory is removed (the
    remote version descends from it); a directory it saw replaced by a file
    or symlink is removed once empty (the plan's deletes of its children
    come first), and set aside as a conflict copy while it still holds
    something the plan did not see.  Anything changed since the plan saw it
    is set aside.
    """
    now = look(root, path)
    if now is None:
        return None
    if now != expected:
        return _set_aside(root, path, now, device)
    if now.kind is not EntryKind.DIRECTORY:
        os.unlink(root / path)
        return None
    try:
        os.rmdir(root / path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return _set_aside(root, path, now, device)
    return None


def _publish(root: Path, temporary: Path, path: str, expected: ScanRecord | None, device: bytes) -> Applied:
    """Rename the finished ``temporary`` to ``path``, keeping a changed local version as a conflict copy.

    A directory the plan saw there is replaced as ``_clear_replaced`` says (rename cannot replace one).
    """
    target = root / path
    try:
        now = look(root, path)
        if now is not None and now.kind is EntryKind.DIRECTORY:
            kept = _clear_replaced(root, path, expected, device)
        else:
            kept = _set_aside_if_changed(root, path, expected, device)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return Applied(path, look(root, path), kept)


def write_file(root: Path, path: str, chunks: Iterable[bytes], *, expected: ScanRecord | None, mode: int,
               mtime_ns: int, device: bytes) -> Applied | None:
    """Write a remote file version at ``path`` (made of ``chunks``) atomically; None if not done (``_inside``).

    ``expected`` is the local record the plan saw at ``path`` (None:
    nothing); ``device`` is the local device id, named in the conflict copy
    of a local version that changed since.  On any error the temporary file
    is removed and the final name keeps what it had.
    """
    if not _inside(root, path):
        return None
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.utime(temporary, ns=(mtime_ns, mtime_ns))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return _publish(root, temporary, path, expected, device)


def write_symlink(root: Path, path: str, link_target: str, *, expected: ScanRecord | None,
                  device: bytes) -> Applied | None:
    """Make ``path`` a symlink to ``link_target`` atomically (a temporary link renamed over the name); None if not
    done (``_inside``).  The link is made as it came, never followed."""
    if not _inside(root, path):
        return None
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f"{TEMP_PREFIX}{os.urandom(8).hex()}"
    os.symlink(link_target, temporary)
    return _publish(root, temporary, path, expected, device)


def make_directory(root: Path, path: str, *, mode: int, expected: ScanRecord | None,
                   device: bytes) -> Applied | None:
    """Make ``path`` a directory with ``mode`` (its parents as needed); an existing directory only gets the mode.

    A file or symlink there (a symlink to a directory included: its target
    never gets the mode) is replaced as ``_clear_replaced`` says: removed if
    it is what the plan saw (``expected``), else kept as a conflict copy
    named with ``device``.  None, and nothing done, when the way there is
    not real directories (``_inside``).
    """
    if not _inside(root, path):
        return None
    target = root / path
    kept = None
    now = look(root, path)
    if now is not None and now.kind is not EntryKind.DIRECTORY:
        kept = _clear_replaced(root, path, expected, device)
    target.mkdir(parents=True, exist_ok=True)
    now = look(root, path)
    if now is None or now.kind is not EntryKind.DIRECTORY:
        return None
    os.chmod(target, mode)
    if kept is not None:
        _fsync_directory(target.parent)
    return Applied(path, look(root, path), kept)


def delete_path(root: Path, path: str, *, expected: ScanRecord) -> Applied | None:
    """Remove ``path`` if it is still what the plan saw; return None (and keep it) if not.

    A local version the delete did not see is kept: the scan reports it as
    a local change, which descends from the tombstone and so wins over it
    (specs/sync.md §Tombstones).  A directory is removed only when empty.
    Nothing is removed through a symlink (``_inside``).
    """
    if not _inside(root, path):
        return None
    now = look(root, path)
    if now is None:
        return Applied(path, None, None)
    if now != expected:
        return None
    try:
        if now.kind is EntryKind.DIRECTORY:
            os.rmdir(root / path)
        else:
            os.unlink(root / path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if now.kind is EntryKind.DIRECTORY and exc.errno == errno.ENOTEMPTY:
            return None
        raise
    _fsync_directory((root / path).parent)
    return Applied(path, None, None)


def move_path(root: Path, source: str, target: str, *, expected_source: ScanRecord,
              expected_target: ScanRecord | None, device: bytes) -> Applied | None:
    """Rename ``source`` to ``target`` (a remote rename, or our losing version to its conflict copy).

    Returns None and moves nothing if ``source`` is no longer what the plan
    saw, or either path goes through a symlink (``_inside``): the caller
    then fetches the content instead.  A changed local version at
    ``target`` is kept as a conflict copy first.
    """
    if not (_inside(root, source) and _inside(root, target)) or look(root, source) != expected_source:
        return None
    (root / target).parent.mkdir(parents=True, exist_ok=True)
    kept = _set_aside_if_changed(root, target, expected_target, device)
    os.replace(root / source, root / target)
    _fsync_directory((root / target).parent)
    if (root / source).parent != (root / target).parent:
        _fsync_directory((root / source).parent)
    return Applied(target, look(root, target), kept)


def set_metadata(root: Path, path: str, *, expected: ScanRecord, mode: int, mtime_ns: int) -> Applied | None:
    """Give ``path`` a new mode and mtime if it is still what the plan saw; None (untouched) if not.

    A symlink gets its own mtime and no mode (Linux has none to give it):
    ``chmod`` and ``utime`` would follow it to its target, anywhere.  A
    directory gets its mode only: its mtime is not synced (specs/sync.md
    §8), and the state's 0 would date it 1970.
    """
    if not _inside(root, path) or look(root, path) != expected:
        return None
    if expected.kind is not EntryKind.SYMLINK:
        os.chmod(root / path, mode)
    if expected.kind is not EntryKind.DIRECTORY:
        os.utime(root / path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    return Applied(path, look(root, path), None)
