"""The append-only log of accepted blocks (``specs/chain.md`` §5.1 Block log record).

libbitcoinkernel 0.1.0a5 loses its newest blocks on an unclean exit (its
block index and chainstate are flushed lazily).  ``mu chain`` therefore
appends every block the kernel accepted to ``blocks.log`` and fsyncs it
before answering the RPC that mined it; at start the log is replayed into
the kernel, which reports blocks it already has as not new.

Record layout, repeated to the end of the file::

    u32 LE  length of the block in bytes (1 .. MAX_BLOCK_SIZE)
    u32 LE  CRC-32 of the block bytes
    bytes   the serialized block

A torn or corrupt tail (a crash mid-append) is cut off at the last whole
record when the log is opened.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

#: Bitcoin's MAX_BLOCK_SERIALIZED_SIZE; larger records mean corruption.
MAX_BLOCK_SIZE = 4_000_000
RECORD_HEADER = struct.Struct("<II")
LOG_FILE = "blocks.log"


class BlockLog:
    """Append-only, fsynced record of the active chain's blocks from height 1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[tuple[int, int]] = []  # (offset of block bytes, length)
        self._valid_end = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "r+b", buffering=0)
        self._scan()

    def _scan(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        pos = 0
        while pos + RECORD_HEADER.size <= len(data):
            length, crc = RECORD_HEADER.unpack_from(data, pos)
            start = pos + RECORD_HEADER.size
            if not 0 < length <= MAX_BLOCK_SIZE or start + length > len(data):
                break
            if zlib.crc32(data[start:start + length]) != crc:
                break
            self.records.append((start, length))
            pos = start + length
        self._valid_end = pos
        if pos != len(data):
            # A torn append from a crash: drop it so new records follow whole ones.
            self._file.truncate(pos)
            os.fsync(self._file.fileno())

    def __len__(self) -> int:
        return len(self.records)

    def read(self, index: int) -> bytes:
        offset, length = self.records[index]
        self._file.seek(offset)
        return self._file.read(length)

    def __iter__(self) -> Iterator[bytes]:
        for index in range(len(self.records)):
            yield self.read(index)

    def append(self, raw: bytes) -> None:
        """Append one block and fsync: after this returns the block survives kill -9."""
        if not 0 < len(raw) <= MAX_BLOCK_SIZE:
            raise ValueError("block size out of range")
        self._file.seek(self._valid_end)
        self._file.write(RECORD_HEADER.pack(len(raw), zlib.crc32(raw)) + raw)
        os.fsync(self._file.fileno())
        self.records.append((self._valid_end + RECORD_HEADER.size, len(raw)))
        self._valid_end += RECORD_HEADER.size + len(raw)

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` records (the kernel disagrees about the rest)."""
        if count >= len(self.records):
            return
        end = self.records[count][0] - RECORD_HEADER.size
        self._file.truncate(end)
        os.fsync(self._file.fileno())
        del self.records[count:]
        self._valid_end = end

    def close(self) -> None:
        self._file.close()
