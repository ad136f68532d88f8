"""One process per data dir: an exclusive ``fcntl.flock`` on a lock file.

``mu node`` holds ``<data dir>/node.lock`` and ``mu chain`` holds
``<data dir>/chain/chain.lock`` for as long as they run (specs/network.md
§6 Control API, "Files in the data dir"; specs/chain.md §5 Files and
recovery).  The lock is taken before any other file in the directory is
touched, so the holder alone writes and removes the files it publishes
(``node.json``, ``control.port``, ``rpc.port``, ``.cookie``).

The kernel drops a ``flock`` when its holder dies, however it dies, so a
lock file left by a killed process never blocks the next start.  The file
itself stays (removing it would let two processes lock two different
inodes under one name); it holds the PID of its last holder, which is what
a refused second process names.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import sleep

#: Bytes of the lock file read for the holder's PID (a decimal PID and a newline).
MAX_PID_TEXT = 32
#: The lock ``mu node`` holds in its data dir.
NODE_LOCK_FILE = "node.lock"
#: A lock found taken is tried again this many times, this many seconds apart
#: (50 ms in all): a ``mu`` command's ``holder`` probe takes it shared for a
#: moment, and must not make a starting node give up.
LOCK_TRIES = 5
LOCK_RETRY_SECONDS = 0.01


class DataDirLocked(Exception):
    """Another live process holds the lock; ``pid`` is its PID when it wrote one."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{path.parent} is in use by {holder} (lock {path.name})")
        self.path = path
        self.pid = pid


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, MAX_PID_TEXT, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


@contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` body.

    The file gets our PID.  The descriptor is not inherited by child
    processes (Python opens files non-inheritable), so a child cannot keep
    the lock alive after we exit.

    Raises:
        DataDirLocked: a live process holds the lock (still after ``LOCK_TRIES``
            tries 10 ms apart: never a longer wait).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for attempt in range(LOCK_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOCK_TRIES - 1:
                    raise DataDirLocked(path, _read_pid(fd)) from None
                sleep(LOCK_RETRY_SECONDS)  # a probe's moment, or a holder that stays: then refused
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def holder(path: Path) -> DataDirLocked | None:
    """Who holds the lock at ``path`` (as the refusal ``hold_lock`` would raise), or None if nobody does.

    Probes with a shared lock taken and let go at once; a missing file is not held.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return DataDirLocked(path, _read_pid(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
