"""Resumable download state for ``mu get`` (specs/network.md §5).

A download into ``OUT`` writes its bytes into ``OUT.mu-part`` (each chunk at
its own offset, so chunks may arrive in any order) and remembers which chunks
are on disk in ``OUT.mu-resume``.  The state file is only ever replaced
atomically, and only after the part file has been fsynced, so every chunk it
marks done is really on disk.  When all chunks are in, the part file is cut to
the file's size, fsynced and renamed to ``OUT``; nothing is ever half-written
at ``OUT``.

State file layout (all integers big-endian):

====== ======= ===========================================================
offset size    field
====== ======= ===========================================================
0      4       magic ``MURS``
4      1       version, 1
5      32      job ID: the caller's digest of what is being fetched
37     4       total chunks N (at most MAX_RESUME_CHUNKS)
41     ⌈N/8⌉   bitmap, chunk i is bit (7 - i % 8) of byte i // 8
…      32      SHA-256 of every byte before it
====== ======= ===========================================================

A state file that is unreadable, corrupt or for another job is ignored and
the download starts over.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

MAGIC = b"MURS"
VERSION = 1
JOB_ID_SIZE = 32
MAX_RESUME_CHUNKS = 1 << 26  # 64 TiB of 1 MiB chunks; an 8 MiB bitmap at most
CHECKPOINT_CHUNKS = 64  # chunks between automatic checkpoints
PART_SUFFIX = ".mu-part"
STATE_SUFFIX = ".mu-resume"
_HEAD = struct.Struct(">4sB32sI")


class ResumeError(Exception):
    """A resumable download was used wrongly or its files cannot be written."""


def encode_state(job_id: bytes, total: int, bitmap: bytes) -> bytes:
    """Serialize a state record (layout in the module docstring)."""
    if len(job_id) != JOB_ID_SIZE:
        raise ResumeError(f"job ID must be {JOB_ID_SIZE} bytes")
    if not 0 <= total <= MAX_RESUME_CHUNKS or len(bitmap) != (total + 7) // 8:
        raise ResumeError("bitmap does not match the chunk count")
    body = _HEAD.pack(MAGIC, VERSION, job_id, total) + bitmap
    return body + hashlib.sha256(body).digest()


def decode_state(data: bytes) -> tuple[bytes, int, bytes] | None:
    """Parse a state record into (job ID, total, bitmap); None if it is not a valid one."""
    if len(data) < _HEAD.size + 32:
        return None
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        return None
    magic, version, job_id, total = _HEAD.unpack_from(body)
    if magic != MAGIC or version != VERSION or total > MAX_RESUME_CHUNKS:
        return None
    bitmap = body[_HEAD.size:]
    if len(bitmap) != (total + 7) // 8:
        return None
    if total % 8 and bitmap and bitmap[-1] & (0xFF >> (total % 8)):
        return None  # bits past the last chunk must be zero
    return job_id, total, bitmap


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartialDownload:
    """The on-disk state of one download; use :meth:`open`.

    Not thread-safe: one download owns it (the fetcher calls it from worker
    threads one call at a time).
    """

    def __init__(self, output: Path, job_id: bytes, total: int, bitmap: bytearray, fd: int) -> None:
        self.output = output
        self.part_path = output.with_name(output.name + PART_SUFFIX)
        self.state_path = output.with_name(output.name + STATE_SUFFIX)
        self.job_id = job_id
        self.total = total
        self._bitmap = bitmap
        self._fd = fd
        self._unsaved = 0
        self.resumed = sum(bin(b).count("1") for b in bitmap)

    @classmethod
    def open(cls, output: Path, job_id: bytes, total: int) -> PartialDownload:
        """Resume the download of ``job_id`` into ``output``, or start it afresh."""
        if len(job_id) != JOB_ID_SIZE:
            raise ResumeError(f"job ID must be {JOB_ID_SIZE} bytes")
        if not 0 <= total <= MAX_RESUME_CHUNKS:
            raise ResumeError(f"chunk count must be 0..{MAX_RESUME_CHUNKS}")
        output = Path(output)
        state_path = output.with_name(output.name + STATE_SUFFIX)
        part_path = output.with_name(output.name + PART_SUFFIX)
        bitmap = bytearray((total + 7) // 8)
        try:
            state = decode_state(state_path.read_bytes())
        except OSError:
            state = None
        fresh = state is None or state[0] != job_id or state[1] != total or not part_path.exists()
        if not fresh:
            assert state is not None
            bitmap = bytearray(state[2])
        try:
            flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0)
            fd = os.open(part_path, flags, 0o600)
        except OSError as exc:
            raise ResumeError(f"cannot open {part_path}: {exc.strerror}") from None
        return cls(output, job_id, total, bitmap, fd)

    def is_done(self, index: int) -> bool:
        self._check(index)
        return bool(self._bitmap[index // 8] & (0x80 >> (index % 8)))

    def missing(self) -> list[int]:
        """Indexes of the chunks not yet on disk, in order."""
        return [i for i in range(self.total) if not self._bitmap[i // 8] & (0x80 >> (i % 8))]

    def write_chunk(self, index: int, offset: int, data: bytes) -> None:
        """Write chunk ``index``'s bytes at ``offset`` and mark it done (durable at the next checkpoint)."""
        self._check(index)
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        self._bitmap[index // 8] |= 0x80 >> (index % 8)
        self._unsaved += 1
        if self._unsaved >= CHECKPOINT_CHUNKS:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make every chunk written so far durable, then record them in the state file."""
        os.fsync(self._fd)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(encode_state(self.job_id, self.total, bytes(self._bitmap)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        _fsync_dir(self.state_path.parent)
        self._unsaved = 0

    def finish(self, size: int) -> Path:
        """Cut the part file to ``size``, move it to the output atomically, drop the state file."""
        if self.missing():
            raise ResumeError(f"{len(self.missing())} chunks are still missing")
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.part_path, self.output)
        self.state_path.unlink(missing_ok=True)
        _fsync_dir(self.output.parent)
        return self.output

    def close(self) -> None:
        """Checkpoint and close, keeping the files for a later resume."""
        if self._fd >= 0:
            self.checkpoint()
            os.close(self._fd)
            self._fd = -1

    def _check(self, index: int) -> None:
        if not 0 <= index < self.total:
            raise ResumeError(f"chunk index {index} outside 0..{self.total - 1}")
