"""A fetched file's plaintext written past the page cache, where the file system allows it.

A ``mu get`` writes each byte of the file once, in order, and does not read
it back.  Through the page cache every MiB costs a copy into newly allocated
cache pages; on the reference VM, whose memory the host backs again when the
guest touches freed pages, that was 1.5 to 2.3 ms of CPU per MiB, the
largest single cost of a paid fetch (``scripts/bench-vs-bittorrent``).
Direct I/O (``O_DIRECT``) writes from our buffer to the device instead:
0.1 ms of CPU per MiB here.

``O_DIRECT`` wants the buffer, the file offset and the length aligned
(``ALIGN``).  Plaintext comes in pieces of any size, so it is gathered in a
page-aligned staging buffer that maps onto an aligned stretch of the file,
and written out whole each time it fills, by a thread of the writer's own
while the next buffer fills: a direct write waits for the device, and the
fetch need not wait with it.  What is left at the end (under
``STAGE_BYTES``) goes through the ordinary descriptor: its unaligned tail
cannot go direct.  A file system without direct I/O (tmpfs, some FUSE file
systems) or a device that refuses the alignment gets ordinary writes from
the start or from that point on; the bytes on disk are the same either way
(specs/network.md §5 Writing the file, resuming).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import queue
import threading
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("mu.fetch")

# Offsets, lengths and buffer addresses of direct writes are multiples of this
# (the logical block size of common devices is 512 or 4096).
ALIGN = 4096
# Plaintext gathered before one direct write (a multiple of ALIGN).
STAGE_BYTES = 1024 * 1024
# Staging buffers: one being filled while the others are written out.
STAGES = 4


class PlainWriter:
    """Appends to ``out`` (open for writing, positioned where the plaintext goes) until ``close``.

    Meant for one thread at a time.  ``out`` itself must not be written
    meanwhile; ``close`` leaves its position at the end of what was written.

    With direct I/O, a full staging buffer is written by a thread of the
    writer's own while the caller fills the next one (``stages`` buffers in
    all): a direct write waits for the device, and the caller (the fetch's
    decryption) need not wait with it.  An error of that thread (a full
    disk) is raised by the next ``write`` that waits for a buffer, or by
    ``close``.
    """

    def __init__(self, out: BinaryIO, path: Path, *, stage_bytes: int = STAGE_BYTES, stages: int = STAGES) -> None:
        if stage_bytes <= 0 or stage_bytes % ALIGN:
            raise ValueError(f"the staging buffer must be a positive multiple of {ALIGN} bytes")
        if stages < 1:
            raise ValueError("at least one staging buffer")
        out.flush()
        self._out = out
        self._fd = out.fileno()
        self._offset = out.tell()  # where the next byte goes in the file
        self._direct: int | None = _open_direct(path)
        self._stage: mmap.mmap | None = None
        self._filled = 0  # bytes in the staging buffer; it maps onto the file from _offset - _filled
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()  # buffers written out, to fill again
        # Full buffers for the thread: (buffer, bytes in it, file offset); None: no more.
        self._full: queue.SimpleQueue[tuple[mmap.mmap, int, int] | None] = queue.SimpleQueue()
        self._error: Exception | None = None  # the thread's: raised to the caller, then an OSError naming it
        self._thread: threading.Thread | None = None
        if self._direct is not None:
            for _ in range(stages - 1):
                self._free.put(mmap.mmap(-1, stage_bytes))  # page-aligned
            self._stage = mmap.mmap(-1, stage_bytes)
            self._thread = threading.Thread(target=self._write_out, name="mu-plain-writer", daemon=True)
            self._thread.start()
            # The buffer starts at an aligned offset: a resumed part file's
            # last partial block is read into it and written again with it.
            head = self._offset % ALIGN
            if head:
                got = os.preadv(self._fd, [memoryview(self._stage)[:head]], self._offset - head)
                if got != head:
                    self._fall_back(f"short read of the part file's last {head} bytes")
                else:
                    self._filled = head

    @property
    def direct(self) -> bool:
        """Whether writes still go past the page cache."""
        return self._direct is not None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self._stage is None:
            self._pwrite(self._fd, view, self._offset)
            self._offset += size
            return size
        stage = memoryview(self._stage)
        while view:
            take = min(len(view), len(stage) - self._filled)
            stage[self._filled:self._filled + take] = view[:take]
            self._filled += take
            self._offset += take
            view = view[take:]
            if self._filled == len(stage):
                self._hand_over()
                if self._stage is None:  # fell back: the rest goes through the page cache
                    self._pwrite(self._fd, view, self._offset)
                    self._offset += len(view)
                    break
                stage = memoryview(self._stage)
        return size

    def close(self) -> None:
        """Write out what is staged, wait for the writes under way and let the direct descriptor go;
        ``out`` is left at the end.

        Raises:
            OSError: a write failed (a full disk): the file holds what was written before it.
        """
        try:
            if self._stage is not None and self._filled and self._error is None:
                stage, filled = self._stage, self._filled
                aligned = filled - filled % ALIGN
                start = self._offset - filled
                self._filled = 0
                if aligned:
                    self._full.put((stage, aligned, start))
                self._stop()
                if filled > aligned and self._error is None:  # after the aligned part, never past a hole
                    self._pwrite(self._fd, memoryview(stage)[aligned:filled], start + aligned)
        finally:
            self._stop()
            self._release()
            self._out.seek(self._offset)
        self._raise_error()

    def _hand_over(self) -> None:
        """Give the full staging buffer to the thread and take a free one (waiting for it if none is)."""
        assert self._stage is not None
        self._full.put((self._stage, self._filled, self._offset - self._filled))
        self._stage, self._filled = None, 0
        self._stage = self._free.get()
        if self._direct is None:  # the thread fell back: no more staging
            self._stage = None
        self._raise_error()

    def _write_out(self) -> None:
        """The thread: write each full buffer where it goes, direct while the device takes it."""
        while (item := self._full.get()) is not None:
            stage, filled, start = item
            try:
                if self._error is None:
                    self._write_stage(memoryview(stage)[:filled], start)
            except Exception as exc:  # noqa: BLE001 - the caller raises it; the thread goes on handing buffers back
                self._error = exc
            finally:
                self._free.put(stage)

    def _write_stage(self, view: memoryview, start: int) -> None:
        direct = self._direct
        if direct is not None:
            try:
                self._pwrite(direct, view, start)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                log.info("writing the file through the page cache: direct write refused (%s)", exc)
                self._direct = None
                os.close(direct)
        self._pwrite(self._fd, view, start)

    def _stop(self) -> None:
        """End the thread once it has written every buffer handed to it."""
        if self._thread is not None:
            self._full.put(None)
            self._thread.join()
            self._thread = None

    def _raise_error(self) -> None:
        """Raise the thread's error; later calls raise an ``OSError`` saying an earlier write failed."""
        error = self._error
        if error is not None:
            self._error = OSError(getattr(error, "errno", None) or errno.EIO, f"an earlier write failed: {error}")
            raise error

    def _fall_back(self, why: str) -> None:
        """Go on with ordinary writes (what is staged is written by the caller)."""
        log.info("writing the file through the page cache: %s", why)
        stage, filled = self._stage, self._filled
        self._stop()
        self._release()
        if stage is not None and filled:
            # Bytes staged and not yet written (a read-back head).
            self._pwrite(self._fd, memoryview(stage)[:filled], self._offset - filled)
        self._filled = 0

    def _release(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
        self._stage = None

    @staticmethod
    def _pwrite(fd: int, view: memoryview, offset: int) -> None:
        while view:
            written = os.pwrite(fd, view, offset)
            view = view[written:]
            offset += written


def _open_direct(path: Path) -> int | None:
    """A second descriptor on ``path`` for direct writes, or None where the file system has none."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            return None
        raise
