"""Streaming file encoder: plaintext in, (address, stored chunk) pairs out.

Pure and constant-memory (specs/chunks.md §6.3 Building the tree): it holds at most one
partial data chunk plus, per tree level, at most ``fanout + 1`` pending child
addresses. Index nodes are emitted as soon as a level overflows, so the tree
is built bottom-up while the file streams through.
"""

from __future__ import annotations

import hashlib

from ._crypto import ADDRESS_SIZE, KIND_DATA, KIND_INDEX, KIND_ROOT, ChunkSealer, check_key
from ._errors import LocalChunkError
from ._link import Link
from ._manifest import (
    DEFAULT_CHUNK_SIZE,
    MAX_DEPTH,
    RootRecord,
    check_chunk_size,
    manifest_prefix,
    max_fanout,
)

Chunk = tuple[bytes, bytearray]


def check_fanout(chunk_size: int, fanout: int | None) -> int:
    """Resolve the encoder fanout: the format maximum unless a smaller one (>= 2) is asked."""
    limit = max_fanout(chunk_size)
    if fanout is None:
        return limit
    if not 2 <= fanout <= limit:
        raise LocalChunkError(f"fanout must be from 2 to {limit} for chunk size {chunk_size}, got {fanout}")
    return fanout


class FileEncoder:
    """Encrypts and chunks one file.

    Usage::

        enc = FileEncoder(key)
        for piece in pieces:
            for address, chunk in enc.feed(piece):
                store(address, chunk)
        for address, chunk in enc.finish():
            store(address, chunk)
        link = enc.link

    Each yielded chunk is a fresh ``bytearray`` the caller owns. The last pairs
    returned by :meth:`finish` are the manifest; the very last is the root.

    Args:
        key: 32-byte file key (random bytes from the caller, or a convergent
            key from :class:`ConvergentKeyHasher`).
        chunk_size: plaintext bytes per data chunk (§3).
        name, media_type: optional metadata kept in the encrypted root.
        fanout: children per manifest chunk; the default (the maximum) is
            what conforming encoders use. Tests lower it to build deep trees.
    """

    def __init__(
        self,
        key: bytes,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        name: str | None = None,
        media_type: str | None = None,
        fanout: int | None = None,
    ) -> None:
        self._key = check_key(key)
        self.chunk_size = check_chunk_size(chunk_size)
        self.fanout = check_fanout(chunk_size, fanout)
        # Validate metadata now, not after the whole file went through.
        RootRecord(size=0, chunk_size=chunk_size, depth=0, children=b"", name=name, media_type=media_type)
        self.name = name
        self.media_type = media_type
        self._sealer = ChunkSealer(self._key)
        self._buf = bytearray(chunk_size)
        self._fill = 0
        self._size = 0
        self._data_index = 0  # data chunks claimed (sealed by feed, or by next_data)
        self._data_added = 0  # data chunk addresses in the tree
        # _levels[L]: pending child addresses of the next level-(L+1) node.
        self._levels: list[bytearray] = [bytearray()]
        self._node_counts: list[int] = [0]
        self._root: bytes | None = None

    @property
    def size(self) -> int:
        """Plaintext bytes fed so far."""
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
        return Link(self.root, self._key)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Chunk]:
        """Take the next plaintext bytes; return the chunks they completed."""
        if self._root is not None:
            raise LocalChunkError("the encoder has finished")
        if self._data_added != self._data_index or (self._size % self.chunk_size and not self._fill):
            raise LocalChunkError("feed cannot follow next_data until every claimed chunk is added and whole")
        view = memoryview(data).cast("B")
        self._size += len(view)
        out: list[Chunk] = []
        size = self.chunk_size
        pos = 0
        if self._fill:
            take = min(size - self._fill, len(view))
            self._buf[self._fill:self._fill + take] = view[:take]
            self._fill += take
            pos = take
            if self._fill == size:
                self._seal_data(self._buf, out)
                self._fill = 0
        # Whole chunks straight from the caller's buffer: no copy.
        while len(view) - pos >= size:
            self._seal_data(view[pos:pos + size], out)
            pos += size
        if pos < len(view):
            rest = len(view) - pos
            self._buf[:rest] = view[pos:]
            self._fill = rest
        return out

    # -- sealing data chunks out of line ---------------------------------
    #
    # feed() seals each data chunk as it completes.  A caller that wants to
    # seal several data chunks at once (on several cores) splits that into
    # three steps instead: next_data() claims the next chunk's index,
    # seal_data() encrypts and hashes it (it reads only the immutable file
    # key, so calls may run concurrently, in any order), and add_data() puts
    # the addresses into the tree in index order.  The chunks produced are
    # byte for byte those feed() would produce (§6.3).

    def next_data(self, length: int) -> int:
        """Claim the next data chunk, of ``length`` plaintext bytes; return its index.

        Every claimed chunk but the last must be a whole ``chunk_size``;
        a shorter one ends the data.  Cannot be mixed with :meth:`feed`.
        """
        if self._root is not None:
            raise LocalChunkError("the encoder has finished")
        if self._fill:
            raise LocalChunkError("next_data cannot follow a partial feed")
        if self._size % self.chunk_size:
            raise LocalChunkError("a short data chunk was already claimed: it must be the last")
        if not 0 < length <= self.chunk_size:
            raise LocalChunkError(f"a data chunk holds 1 to {self.chunk_size} bytes, got {length}")
        self._size += length
        index = self._data_index
        self._data_index += 1
        return index

    def seal_data(self, index: int, plaintext: bytes | bytearray | memoryview) -> Chunk:
        """Encrypt data chunk ``index``; return (address, stored chunk). Leaves the encoder's state alone."""
        chunk = self._sealer.seal(plaintext, KIND_DATA, 0, index)
        return hashlib.sha256(chunk).digest(), chunk

    def add_data(self, index: int, address: bytes) -> list[Chunk]:
        """Add the address of data chunk ``index`` (claimed, in index order); return manifest chunks it completed."""
        if index != self._data_added or index >= self._data_index:
            raise LocalChunkError(f"data chunk {index} added out of order (next is {self._data_added})")
        if len(address) != ADDRESS_SIZE:
            raise LocalChunkError(f"an address is {ADDRESS_SIZE} bytes")
        self._data_added += 1
        out: list[Chunk] = []
        self._add_child(0, bytes(address), out)
        return out

    def finish(self) -> list[Chunk]:
        """Seal the last partial chunk and the manifest; return those chunks."""
        if self._root is not None:
            raise LocalChunkError("the encoder has finished")
        if self._data_added != self._data_index:
            raise LocalChunkError(f"{self._data_index - self._data_added} claimed data chunks were never added")
        out: list[Chunk] = []
        if self._fill:
            self._seal_data(memoryview(self._buf)[:self._fill], out)
            self._fill = 0
        self._buf = bytearray()
        # Close every level below the top into one last node (§6.3).
        level = 0
        while level + 1 < len(self._levels):
            children = bytes(self._levels[level])
            self._levels[level] = bytearray()
            self._seal_node(level + 1, children, out)
            level += 1
        record = RootRecord(
            size=self._size,
            chunk_size=self.chunk_size,
            depth=level,
            children=bytes(self._levels[level]),
            name=self.name,
            media_type=self.media_type,
        )
        chunk = self._seal_manifest(KIND_ROOT, level, 0, record.children, record.serialize_private())
        address = hashlib.sha256(chunk).digest()
        out.append((address, chunk))
        self._root = address
        return out

    def _seal_data(self, plaintext: bytes | bytearray | memoryview, out: list[Chunk]) -> None:
        address, chunk = self.seal_data(self._data_index, plaintext)
        self._data_index += 1
        self._data_added += 1
        # Children are appended before the nodes that name them, so a store
        # never holds a node whose children it has not been offered yet.
        out.append((address, chunk))
        self._add_child(0, address, out)

    def _add_child(self, level: int, address: bytes, out: list[Chunk]) -> None:
        pending = self._levels[level]
        pending += address
        limit = self.fanout * ADDRESS_SIZE
        if len(pending) > limit:
            # This level overflowed, so a higher level exists: close a node.
            full = bytes(pending[:limit])
            del pending[:limit]
            if level + 1 == len(self._levels):
                if level + 1 > MAX_DEPTH:
                    raise LocalChunkError(f"file needs a tree deeper than {MAX_DEPTH} levels")
                self._levels.append(bytearray())
                self._node_counts.append(0)
            self._seal_node(level + 1, full, out)

    def _seal_node(self, level: int, children: bytes, out: list[Chunk]) -> None:
        index = self._node_counts[level - 1]
        self._node_counts[level - 1] += 1
        chunk = self._seal_manifest(KIND_INDEX, level, index, children, b"")
        address = hashlib.sha256(chunk).digest()
        out.append((address, chunk))
        self._add_child(level, address, out)

    def _seal_manifest(self, kind: int, level: int, index: int, children: bytes, private: bytes) -> bytearray:
        # Cleartext header and addresses first, then the private part sealed
        # with that prefix as associated data (§6.1). The key derivation uses
        # (kind, 0, 0) for the root and (kind, level, index) for index nodes.
        prefix = manifest_prefix(kind, level, children)
        sealed = self._sealer.seal(private, kind, level if kind == KIND_INDEX else 0, index, aad=prefix)
        chunk = bytearray(prefix)
        chunk += sealed
        return chunk
