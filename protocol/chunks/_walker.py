"""Verify-cap walker: every chunk of a file from its bare root, no key.

specs/chunks.md §6.5 Walking with the bare root.

Pure state machine with the same driving interface as
:class:`~protocol.chunks.FileDecoder`: :meth:`RawWalker.next_address` names
the chunk wanted, the caller fetches it from anywhere and hands the bytes to
:meth:`RawWalker.feed`, which checks SHA-256(bytes) against the address and,
for manifest chunks, parses the cleartext header (§6.1) to learn the
children. It never decrypts anything: that is what lets a host that holds
only the root fetch, verify and host a file it cannot read.

Integrity follows from the root alone: each address is the SHA-256 of the
chunk that lists the next ones, so a chunk that passes was put in the tree
by whoever made the root. Memory is one open manifest chunk per tree level.
"""

from __future__ import annotations

import hashlib

from ._crypto import ADDRESS_SIZE, KIND_INDEX, KIND_ROOT
from ._errors import IntegrityError, LocalChunkError

# The same open-node cursor and tree walk the keyed decoder uses.
from ._decoder import _Frame, _TreeCursor
from ._manifest import parse_header


class RawWalker(_TreeCursor):
    """Walks and verifies one file's chunks from its root address, without the key.

    Usage::

        walker = RawWalker(root)
        while (address := walker.next_address()) is not None:
            stored = fetch(address)
            walker.feed(stored)          # raises IntegrityError on a bad chunk
            keep(address, stored)

    Chunks come in the keyed decoder's order (§6.4): the root, then the tree
    depth-first, left to right. ``feed`` returns an empty buffer so the
    walker can stand in for a decoder in a fetch loop; counts are kept in
    :attr:`chunks`, :attr:`data_chunks`, :attr:`manifest_chunks` and
    :attr:`stored_bytes`.
    """

    _role = "walker"

    def __init__(self, root: bytes) -> None:
        if len(root) != ADDRESS_SIZE:
            raise LocalChunkError(f"a root address is {ADDRESS_SIZE} bytes")
        self.root = bytes(root)
        self.depth: int | None = None
        self.version: int | None = None  # the root's format; every index chunk must share it
        self._stack: list[_Frame] = []
        self._failed = False
        self.chunks = 0
        self.data_chunks = 0
        self.manifest_chunks = 0
        self.stored_bytes = 0

    @property
    def done(self) -> bool:
        """True once every chunk of the file has been fed and verified."""
        return self.next_address() is None

    def _started(self) -> bool:
        return self.depth is not None

    def feed(self, stored: bytes | bytearray | memoryview, *, verified: bool = False) -> bytearray:
        """Verify the chunk at :meth:`next_address`; return an empty buffer.

        ``verified``: the caller already checked SHA-256(stored) == the address.

        Raises:
            IntegrityError: the bytes do not hash to the address, or a
                manifest chunk's cleartext header breaks §6.1 (the walker is
                then dead).
        """
        address = self.next_address()
        if address is None:
            raise LocalChunkError("the walk is complete: no chunk is wanted")
        try:
            self._feed(address, stored, verified)
        except IntegrityError:
            self._failed = True
            raise
        self.chunks += 1
        self.stored_bytes += len(stored)
        return bytearray()

    def skip_data(self) -> bytes | None:
        """Pass over the next chunk without its bytes if it is a data chunk; return its address, else None.

        A data chunk's address is in its parent's header, already checked, so
        listing a file's chunks (specs/folders.md §7.1 Chunk list) needs only
        its manifest chunks; the data chunk itself is not verified here.
        """
        address = self.next_address()
        if address is None or not self._stack or self._stack[-1].child_level != 0:
            return None
        self._stack[-1].pos += 1
        self.data_chunks += 1
        self.chunks += 1
        return address

    def _feed(self, address: bytes, stored: bytes | bytearray | memoryview, verified: bool) -> None:
        if not verified and hashlib.sha256(stored).digest() != address:
            raise IntegrityError(f"chunk {address.hex()} does not match its address", address=address)
        if self.depth is None:
            header = parse_header(stored, kind=KIND_ROOT, address=address)
            self.depth = header.level
            self.version = header.version
            self.manifest_chunks += 1
            self._stack.append(_Frame(header.level, header.children))
            return
        frame = self._stack[-1]
        frame.pos += 1
        if frame.child_level == 0:
            self.data_chunks += 1
            return
        header = parse_header(stored, kind=KIND_INDEX, level=frame.child_level, version=self.version,
                              address=address)
        self.manifest_chunks += 1
        self._stack.append(_Frame(frame.child_level - 1, header.children))
