"""Streaming format-3 encoder: content-defined chunks (specs/chunks.md §6.6 Format 3).

Plaintext goes through the FastCDC :class:`~protocol.chunks._cdc.Chunker`;
each data chunk is sealed under its own single-use key (§4.4): positional
(from a file key) or convergent (from a chunk secret and the chunk's
plaintext, so equal chunks under one secret are one stored chunk). The tree
is built as in format 2 (§6.3), but every manifest chunk also seals one
(length, key) entry per child, so the reader never derives a child key.

Memory: the chunker's tail (< ``CDC_MAX``) plus, per tree level, at most
``fanout + 1`` pending children.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ._cdc import DEFAULT_CDC, CdcParams, Chunker
from ._crypto import ADDRESS_SIZE, KIND_DATA, KIND_INDEX, KIND_ROOT, check_key
from ._errors import LocalChunkError
from ._keys3 import ConvergentKeys, PositionalKeys, seal_keyed
from ._link import Link
from ._manifest import ENTRY_SIZE, FORMAT_V3, MAX_DEPTH, MAX_FANOUT_V3, manifest_prefix
from ._manifest3 import RootRecordV3, entries_total, pack_entry

Chunk = tuple[bytes, bytearray]


@dataclass(frozen=True, slots=True)
class SealedData:
    """A sealed data chunk: its address, stored bytes, plaintext length and key."""

    address: bytes
    chunk: bytearray
    length: int
    key: bytes = field(repr=False)


def check_fanout_v3(fanout: int | None) -> int:
    """Resolve a format-3 fanout: the format maximum unless a smaller one (>= 2) is asked."""
    if fanout is None:
        return MAX_FANOUT_V3
    if not 2 <= fanout <= MAX_FANOUT_V3:
        raise LocalChunkError(f"fanout must be from 2 to {MAX_FANOUT_V3}, got {fanout}")
    return fanout


class _Level:
    """Pending children of the next node up: packed addresses, packed entries."""

    __slots__ = ("addresses", "entries", "nodes")

    def __init__(self) -> None:
        self.addresses = bytearray()
        self.entries = bytearray()
        self.nodes = 0  # nodes of the level above closed so far (their index)


class CdcFileEncoder:
    """Cuts, encrypts and chunks one file in format 3.

    Usage is :class:`~protocol.chunks.FileEncoder`'s (``feed`` / ``finish``
    / ``link``, or ``next_data`` / ``seal_data`` / ``add_data`` to seal on
    several threads); exactly one of ``key`` and ``chunk_secret`` is given.

    Args:
        key: 32-byte file key: chunk keys are derived from it by position,
            and it is the link's key.
        chunk_secret: 32-byte secret: every key is derived from it and the
            chunk's plaintext, the link's key too (two equal files under one
            secret have one root).
        cdc: the cut parameters (the defaults are what conforming encoders use).
        name, media_type: optional metadata kept in the encrypted root.
        fanout: children per manifest chunk; tests lower it to build deep trees.
    """

    def __init__(
        self,
        key: bytes | None = None,
        *,
        chunk_secret: bytes | None = None,
        cdc: CdcParams = DEFAULT_CDC,
        name: str | None = None,
        media_type: str | None = None,
        fanout: int | None = None,
    ) -> None:
        if (key is None) == (chunk_secret is None):
            raise LocalChunkError("give a file key or a chunk secret, not both or neither")
        self._file_key = None if key is None else check_key(key)
        self._positional = None if key is None else PositionalKeys(key)
        self._convergent = None if chunk_secret is None else ConvergentKeys(chunk_secret)
        self.cdc = cdc
        self.fanout = check_fanout_v3(fanout)
        # Validate metadata now, not after the whole file went through.
        RootRecordV3(size=0, cdc=cdc, depth=0, children=b"", entries=b"", name=name, media_type=media_type)
        self.name = name
        self.media_type = media_type
        self._chunker = Chunker(cdc)
        self._size = 0
        self._claimed = 0  # data chunks claimed (by feed or next_data)
        self._added = 0  # data chunks in the tree
        self._levels: list[_Level] = [_Level()]
        self._root: bytes | None = None
        self._link_key: bytes | None = None

    @property
    def size(self) -> int:
        """Plaintext bytes taken so far."""
        return self._size

    @property
    def root(self) -> bytes:
        """Root address; available after :meth:`finish`."""
        if self._root is None:
            raise LocalChunkError("the encoder has not finished")
        return self._root

    @property
    def link(self) -> Link:
        """Read capability for the file; available after :meth:`finish`."""
        return Link(self.root, self._link_key)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Chunk]:
        """Take the next plaintext bytes; return the chunks they completed."""
        self._check_open()
        out: list[Chunk] = []
        for plain in self._chunker.feed(data):
            self._seal_in_line(plain, out)
        return out

    # -- sealing data chunks out of line (§6.3): claim in order, seal
    # anywhere (seal_data reads only immutable keys), add in order.  The
    # caller cuts with its own Chunker of the same parameters.

    def next_data(self, length: int) -> int:
        """Claim the next data chunk, of ``length`` plaintext bytes; return its index."""
        self._check_open()
        if not 0 < length <= self.cdc.max_size:
            raise LocalChunkError(f"a data chunk holds 1 to {self.cdc.max_size} bytes, got {length}")
        self._size += length
        self._claimed += 1
        return self._claimed - 1

    def seal_data(self, index: int, plaintext: bytes | bytearray | memoryview) -> SealedData:
        """Encrypt data chunk ``index``; leaves the encoder's state alone (thread-safe)."""
        if self._convergent is not None:
            key = self._convergent.data_key(plaintext)
        else:
            assert self._positional is not None
            key = self._positional.key(KIND_DATA, 0, index)
        chunk = seal_keyed(key, plaintext)
        return SealedData(hashlib.sha256(chunk).digest(), chunk, len(plaintext), key)

    def add_data(self, index: int, sealed: SealedData) -> list[Chunk]:
        """Put data chunk ``index`` (claimed, in index order) in the tree; return the manifest chunks it completed."""
        if index != self._added or index >= self._claimed:
            raise LocalChunkError(f"data chunk {index} added out of order (next is {self._added})")
        self._added += 1
        out: list[Chunk] = []
        self._add_child(0, sealed.address, pack_entry(sealed.length, sealed.key), out)
        return out

    def finish(self) -> list[Chunk]:
        """Seal the last data chunk and the manifest; return those chunks (the root last)."""
        self._check_open()
        out: list[Chunk] = []
        for plain in self._chunker.finish():
            self._seal_in_line(plain, out)
        if self._added != self._claimed:
            raise LocalChunkError(f"{self._claimed - self._added} claimed data chunks were never added")
        # Close every level below the top into one last node (§6.3).
        level = 0
        while level + 1 < len(self._levels):
            pending = self._levels[level]
            children, entries = bytes(pending.addresses), bytes(pending.entries)
            pending.addresses, pending.entries = bytearray(), bytearray()
            self._seal_node(level + 1, children, entries, out)
            level += 1
        top = self._levels[level]
        record = RootRecordV3(size=self._size, cdc=self.cdc, depth=level, children=bytes(top.addresses),
                              entries=bytes(top.entries), name=self.name, media_type=self.media_type)
        prefix = manifest_prefix(KIND_ROOT, level, record.children, FORMAT_V3)
        private = record.serialize_private()
        if self._convergent is not None:
            self._link_key = self._convergent.file_key(prefix, private)
        else:
            self._link_key = self._file_key
        assert self._link_key is not None
        # The root is always keyed by position from the link's key (§4.4).
        root_key = PositionalKeys(self._link_key).key(KIND_ROOT, 0, 0)
        chunk = bytearray(prefix)
        chunk += seal_keyed(root_key, private, aad=prefix)
        address = hashlib.sha256(chunk).digest()
        out.append((address, chunk))
        self._root = address
        return out

    def _check_open(self) -> None:
        if self._root is not None:
            raise LocalChunkError("the encoder has finished")

    def _seal_in_line(self, plain: bytes, out: list[Chunk]) -> None:
        if self._added != self._claimed:
            raise LocalChunkError("feed cannot follow next_data until every claimed chunk is added")
        index = self.next_data(len(plain))
        sealed = self.seal_data(index, plain)
        # Children are appended before the nodes that name them (§6.3).
        out.append((sealed.address, sealed.chunk))
        out.extend(self.add_data(index, sealed))

    def _add_child(self, level: int, address: bytes, entry: bytes, out: list[Chunk]) -> None:
        pending = self._levels[level]
        pending.addresses += address
        pending.entries += entry
        if len(pending.addresses) > self.fanout * ADDRESS_SIZE:
            # This level overflowed, so a higher level exists: close a node.
            cut_a, cut_e = self.fanout * ADDRESS_SIZE, self.fanout * ENTRY_SIZE
            children, entries = bytes(pending.addresses[:cut_a]), bytes(pending.entries[:cut_e])
            del pending.addresses[:cut_a], pending.entries[:cut_e]
            if level + 1 == len(self._levels):
                if level + 1 > MAX_DEPTH:
                    raise LocalChunkError(f"file needs a tree deeper than {MAX_DEPTH} levels")
                self._levels.append(_Level())
            self._seal_node(level + 1, children, entries, out)

    def _seal_node(self, level: int, children: bytes, entries: bytes, out: list[Chunk]) -> None:
        below = self._levels[level - 1]
        index = below.nodes
        below.nodes += 1
        prefix = manifest_prefix(KIND_INDEX, level, children, FORMAT_V3)
        if self._convergent is not None:
            key = self._convergent.node_key(prefix, entries)
        else:
            assert self._positional is not None
            key = self._positional.key(KIND_INDEX, level, index)
        chunk = bytearray(prefix)
        chunk += seal_keyed(key, entries, aad=prefix)
        address = hashlib.sha256(chunk).digest()
        out.append((address, chunk))
        self._add_child(level, address, pack_entry(entries_total(entries), key), out)
