"""Chunk lists: every chunk address a snapshot needs, readable with the verify link (specs/folders.md §7.1).

A verify-cap holder (a host paid to keep a folder) can walk the snapshot
record's root, but the manifest's and the files' roots are sealed inside
the record.  Each snapshot taken through a node therefore also stores a
**chunk list**: its number and time, the previous snapshot's list, its
record's root and the sorted addresses of every chunk of its manifest and
files.  The list is stored like a file under a chunk secret derived from
the folder's *public* key, and its link goes in the record value (v2), its
key padded under that same secret: anyone who knows the public key (every
DHT node holding the record) can read it.  It holds only ciphertext
addresses, which the hosts holding those chunks see anyway, so it tells a
verify-cap holder which chunks to keep and nothing about names, sizes of
files or which chunks make up which file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocol.chunks import ADDRESS_SIZE, Link

from ._manifest import FolderFormatError, _link_bytes, _pack, _parse_link, _unpack

CHUNK_LIST_VERSION = 1
# specs/folders.md §3: 4 Mi addresses (a 4 TiB tree at the 1 MiB average chunk), 128 MiB of list.
MAX_LIST_ADDRESSES = 4 * 1024 * 1024
MAX_CHUNK_LIST_BYTES = MAX_LIST_ADDRESSES * ADDRESS_SIZE + 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkList:
    """One snapshot's list: what a verify-cap holder needs to keep it (§7.1 Chunk list)."""

    number: int  # the snapshot's number (§6)
    time_ns: int  # the snapshot's time_ns (§6): lets a verify-cap holder apply the retention policy
    previous: Link | None  # the previous snapshot's list, or None (first, or taken without one)
    record: bytes  # the snapshot record's root (its chunks are walked from it, §6.5 of specs/chunks.md)
    addresses: tuple[bytes, ...]  # every chunk of the manifest and the files, ascending, each once

    def __post_init__(self) -> None:
        if self.number < 1 or not 0 <= self.time_ns < 2**64:
            raise FolderFormatError("a chunk list's number is at least 1 and its time non-negative")
        if self.previous is not None and self.previous.key is None:
            raise FolderFormatError("a chunk list's previous link carries its key")
        if len(self.record) != ADDRESS_SIZE:
            raise FolderFormatError(f"a snapshot record root is {ADDRESS_SIZE} bytes")
        if len(self.addresses) > MAX_LIST_ADDRESSES:
            raise FolderFormatError(f"more than {MAX_LIST_ADDRESSES} chunk addresses")
        if any(len(a) != ADDRESS_SIZE for a in self.addresses) or any(
                a >= b for a, b in zip(self.addresses, self.addresses[1:])):
            raise FolderFormatError("chunk list addresses are 32 bytes each, strictly ascending")

    @classmethod
    def of(cls, *, number: int, time_ns: int, previous: Link | None, record: bytes,
           addresses: Iterable[bytes]) -> ChunkList:
        """The list of ``addresses`` (any order, repeats allowed)."""
        return cls(number=number, time_ns=time_ns, previous=previous, record=record,
                   addresses=tuple(sorted(set(addresses))))

    def encode(self) -> bytes:
        """``[1, number, time_ns, previous: bin(64) | nil, record: bin(32), addresses: bin(32 × n)]``."""
        previous = _link_bytes(self.previous) if self.previous is not None else None
        return _pack([CHUNK_LIST_VERSION, self.number, self.time_ns, previous, self.record,
                      b"".join(self.addresses)])

    @classmethod
    def decode(cls, data: bytes) -> ChunkList:
        """Parse and check a chunk list; raise FolderFormatError on any flaw."""
        value = _unpack(data, MAX_CHUNK_LIST_BYTES, "chunk list", max_bin=MAX_LIST_ADDRESSES * ADDRESS_SIZE)
        if not isinstance(value, list) or len(value) != 6 or value[0] != CHUNK_LIST_VERSION:
            raise FolderFormatError(f"a chunk list is [{CHUNK_LIST_VERSION}, 5 fields]")
        _, number, time_ns, previous, record, packed = value
        if type(number) is not int or type(time_ns) is not int or not isinstance(record, bytes) \
                or not isinstance(packed, bytes) or len(packed) % ADDRESS_SIZE:
            raise FolderFormatError("a chunk list's fields have the wrong types or lengths")
        return cls(number=number, time_ns=time_ns,
                   previous=None if previous is None else _parse_link(previous, "previous chunk list link"),
                   record=record,
                   addresses=tuple(packed[i:i + ADDRESS_SIZE] for i in range(0, len(packed), ADDRESS_SIZE)))
