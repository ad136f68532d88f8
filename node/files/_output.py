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
and written out whole each time it fills.  What is left at the end (under
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
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("mu.fetch")

# Offsets, lengths and buffer addresses of direct writes are multiples of this
# (the logical block size of common devices is 512 or 4096).
ALIGN = 4096
# Plaintext gathered before one direct write (a multiple of ALIGN).
STAGE_BYTES = 1024 * 1024


class PlainWriter:
    """Appends to ``out`` (open for writing, positioned where the plaintext goes) until ``close``.

    Meant for one thread at a time.  ``out`` itself must not be written
    meanwhile; ``close`` leaves its position at the end of what was written.
    """

    def __init__(self, out: BinaryIO, path: Path, *, stage_bytes: int = STAGE_BYTES) -> None:
        if stage_bytes <= 0 or stage_bytes % ALIGN:
            raise ValueError(f"the staging buffer must be a positive multiple of {ALIGN} bytes")
        out.flush()
        self._out = out
        self._fd = out.fileno()
        self._offset = out.tell()  # where the next byte goes in the file
        self._direct: int | None = _open_direct(path)
        self._stage: mmap.mmap | None = None
        self._filled = 0  # bytes in the staging buffer; it maps onto the file from _offset - _filled
        if self._direct is not None:
            self._stage = mmap.mmap(-1, stage_bytes)  # page-aligned
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
                self._flush_stage(full=True)
                if self._stage is None:  # fell back: the rest goes through the page cache
                    self._pwrite(self._fd, view, self._offset)
                    self._offset += len(view)
                    break
        return size

    def close(self) -> None:
        """Write out what is staged and release the direct descriptor; ``out`` is left at the end.

        Raises:
            OSError: the write failed (a full disk): the file holds what was written before it.
        """
        try:
            if self._stage is not None and self._filled:
                self._flush_stage(full=False)
        finally:
            self._release()
            self._out.seek(self._offset)

    def _flush_stage(self, *, full: bool) -> None:
        """Write the staging buffer (all of it when ``full``, else its aligned part direct, the rest not)."""
        assert self._stage is not None and self._direct is not None
        stage = memoryview(self._stage)
        start = self._offset - self._filled
        aligned = self._filled if full else self._filled - self._filled % ALIGN
        try:
            if aligned:
                self._pwrite(self._direct, stage[:aligned], start)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._fall_back(f"direct write refused ({exc})")
            aligned = 0
        if self._filled > aligned:
            self._pwrite(self._fd, stage[aligned:self._filled], start + aligned)
        self._filled = 0

    def _fall_back(self, why: str) -> None:
        """Go on with ordinary writes (what is staged is written by the caller)."""
        log.info("writing the file through the page cache: %s", why)
        stage, filled = self._stage, self._filled
        self._release()
        if stage is not None and filled:
            # Bytes staged and not yet written (a read-back head, a refused write).
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
