"""Streaming file decoder, driven by a caller that fetches chunks by address.

Pure state machine (specs/chunks.md §6.4 Reading with the key): :meth:`FileDecoder.next_address`
says which chunk it needs, the caller fetches it from anywhere (a local
store, a peer) and hands the bytes to :meth:`FileDecoder.feed`, which
verifies them against the address, authenticates and decrypts them, and
returns plaintext to append to the output. Memory is bounded by one open
index node per tree level.

Both formats are read; the root's first byte decides. Format 2 derives each
chunk's key from the file key and its position; format 3 (§6.6 Format 3)
takes each child's key and plaintext length from its parent's sealed
entries, checked to add up before any child is fetched.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ._crypto import ADDRESS_SIZE, KIND_DATA, KIND_INDEX, KIND_ROOT, TAG_SIZE, ChunkSealer, check_key
from ._errors import IntegrityError, LocalChunkError
from ._keys3 import PositionalKeys, open_keyed, seal_keyed
from ._link import Link
from ._manifest import FORMAT_V3, FORMAT_VERSION, MANIFEST_V3_SIZE, ManifestHeader, RootRecord, max_fanout, parse_header
from ._manifest3 import RootRecordV3, check_entries, entry_key, entry_length


class _Frame:
    """One open manifest chunk: its packed children, their format-3 entries, and the next one to visit."""

    __slots__ = ("child_level", "children", "entries", "pos")

    def __init__(self, child_level: int, children: bytes, entries: bytes = b"") -> None:
        self.child_level = child_level
        self.children = children
        self.entries = entries
        self.pos = 0

    def current(self) -> bytes | None:
        start = self.pos * ADDRESS_SIZE
        if start >= len(self.children):
            return None
        return self.children[start:start + ADDRESS_SIZE]


class _TreeCursor:
    """The walk the keyed decoder and the verify-cap walker share.

    The root comes first; then the children of the open manifest chunks,
    depth first, in order.  Subclasses keep ``root``, ``_stack`` and
    ``_failed`` and say when the root has been fed (``_started``).
    """

    root: bytes
    _stack: list[_Frame]
    _failed: bool
    _role = "decoder"

    def _started(self) -> bool:
        raise AssertionError("subclasses say when the root has been fed")

    def next_address(self) -> bytes | None:
        """The address of the chunk :meth:`feed` wants next, or None when done."""
        if self._failed:
            raise LocalChunkError(f"the {self._role} failed earlier")
        if not self._started():
            return self.root
        while self._stack:
            address = self._stack[-1].current()
            if address is not None:
                return address
            self._stack.pop()
        return None

    def upcoming(self, limit: int) -> list[bytes]:
        """Up to ``limit`` addresses that will be wanted next, known without fetching.

        Lets a fetcher pipeline requests: they are the rest of the innermost
        open manifest chunk, starting with :meth:`next_address`.
        """
        first = self.next_address()
        if first is None:
            return []
        if not self._started():
            return [first]
        frame = self._stack[-1]
        start = frame.pos * ADDRESS_SIZE
        stop = min(len(frame.children), start + limit * ADDRESS_SIZE)
        return [frame.children[i:i + ADDRESS_SIZE] for i in range(start, stop, ADDRESS_SIZE)]


def _slot_v3(frame: _Frame, pos: int, index: int, address: bytes) -> DataSlot:
    """The slot of the data chunk at ``pos`` in a format-3 frame: length and key from its entry."""
    return DataSlot(address, index, entry_length(frame.entries, pos), entry_key(frame.entries, pos))


def _data_size(manifest: RootRecord, index: int) -> int:
    """Plaintext bytes of data chunk ``index``: the chunk size, less for the last."""
    return min(manifest.chunk_size, manifest.size - index * manifest.chunk_size)


@dataclass(frozen=True, slots=True)
class DataSlot:
    """A data chunk the decoder will want: its address, index and plaintext size.

    ``key`` is the chunk's own key in format 3 (from its parent's entry,
    §6.6); None in format 2, where the key follows from the index.
    """

    address: bytes
    index: int
    size: int
    key: bytes | None = field(default=None, repr=False)


class FileDecoder(_TreeCursor):
    """Decrypts and verifies one file from its root address and key.

    Usage::

        dec = FileDecoder(link.root, link.key)
        while (address := dec.next_address()) is not None:
            output.write(dec.feed(fetch(address)))

    Every chunk is checked against its address (SHA-256) and its GCM tag
    before any plaintext leaves :meth:`feed`; on failure it raises
    :class:`IntegrityError` naming the chunk and the decoder is dead. The
    file size is checked against the root as data arrives, so no byte
    beyond the declared size is ever returned.
    """

    def __init__(self, root: bytes, key: bytes) -> None:
        if len(root) != ADDRESS_SIZE:
            raise LocalChunkError(f"a root address is {ADDRESS_SIZE} bytes")
        self.root = bytes(root)
        self._key = check_key(key)
        self._sealer = ChunkSealer(self._key)
        self.manifest: RootRecord | RootRecordV3 | None = None
        self._stack: list[_Frame] = []
        self._node_counts: list[int] = []
        self._data_index = 0
        self._emitted = 0
        self._failed = False

    @classmethod
    def from_link(cls, link: Link) -> FileDecoder:
        """Decoder for a read capability (a link that carries its key)."""
        if link.key is None:
            raise LocalChunkError("this link has no key: it can verify the file but not decrypt it")
        return cls(link.root, link.key)

    @property
    def done(self) -> bool:
        """True once the whole file has been returned."""
        return self.next_address() is None

    @property
    def bytes_out(self) -> int:
        """Plaintext bytes returned so far."""
        return self._emitted

    def _started(self) -> bool:
        return self.manifest is not None

    def feed(self, stored: bytes | bytearray | memoryview, *, verified: bool = False) -> bytearray:
        """Verify and decrypt the chunk at :meth:`next_address`.

        ``verified``: the caller already checked SHA-256(stored) == the
        address (a fetcher's transport did), so it is not hashed again.

        Returns:
            Plaintext to append to the output (empty for manifest chunks).
        Raises:
            IntegrityError: the bytes are not that chunk, fail authentication
                (corruption or wrong key), or break the format.
        """
        address = self.next_address()
        if address is None:
            raise LocalChunkError("the file is complete: no chunk is wanted")
        try:
            return self._feed(address, stored, verified)
        except IntegrityError:
            self._failed = True
            raise

    def _feed(self, address: bytes, stored: bytes | bytearray | memoryview, verified: bool) -> bytearray:
        if not verified and hashlib.sha256(stored).digest() != address:
            raise IntegrityError(f"chunk {address.hex()} does not match its address", address=address)
        manifest = self.manifest
        if manifest is None:
            header = parse_header(stored, kind=KIND_ROOT, address=address)
            if header.version == FORMAT_V3:
                return self._feed_root_v3(header, address, stored)
            view = memoryview(stored)
            plain = self._sealer.open(view[header.prefix_size:], KIND_ROOT, 0, 0, address,
                                      aad=view[:header.prefix_size])
            manifest = RootRecord.parse(plain, header, address=address)
            self._check_root(manifest, address, len(stored))
            self.manifest = manifest
            self._node_counts = [0] * manifest.depth
            self._stack.append(_Frame(manifest.depth, manifest.children))
            return bytearray()
        frame = self._stack[-1]
        frame.pos += 1
        if frame.child_level == 0:
            return self._feed_data(manifest, frame, address, stored)
        if isinstance(manifest, RootRecordV3):
            return self._feed_index_v3(manifest, frame, address, stored)
        level = frame.child_level
        index = self._node_counts[level - 1]
        self._node_counts[level - 1] += 1
        header = parse_header(stored, kind=KIND_INDEX, level=level, version=FORMAT_VERSION, address=address)
        if header.count > max_fanout(manifest.chunk_size):
            raise IntegrityError(f"index node {address.hex()} lists more addresses than the fanout", address=address)
        view = memoryview(stored)
        # The private part is empty; the tag authenticates the cleartext prefix (§6.2).
        self._sealer.open(view[header.prefix_size:], KIND_INDEX, level, index, address, aad=view[:header.prefix_size])
        self._stack.append(_Frame(level - 1, header.children))
        return bytearray()

    # -- opening data chunks out of line --------------------------------
    #
    # feed() verifies and decrypts each chunk as it arrives.  A caller that
    # wants to open several data chunks at once (on several cores) asks for
    # data_slots(), opens each with open_data() (which reads only the
    # immutable file key, so calls may run concurrently, in any order), and
    # hands the plaintexts back through accept_data() in order.  Verification
    # is the same as feed()'s: address, size, then the GCM tag (§6.4).

    def data_slots(self, limit: int, skip: int = 0) -> list[DataSlot]:
        """The data chunks wanted next, after ``skip`` of them, at most ``limit``.

        Empty when the next chunk wanted (after ``skip``) is not a data chunk:
        the root, an index node, or the end of the file.
        """
        manifest = self.manifest
        # next_address() also closes finished manifest chunks, so the top of
        # the stack is the one the next chunk comes from.
        if self.next_address() is None or manifest is None or self._stack[-1].child_level != 0:
            return []
        frame = self._stack[-1]
        upcoming = self.upcoming(skip + limit)[skip:]
        slots = []
        for offset, address in enumerate(upcoming):
            index = self._data_index + skip + offset
            if isinstance(manifest, RootRecordV3):
                slots.append(_slot_v3(frame, frame.pos + skip + offset, index, address))
            elif index >= manifest.chunk_count:
                break  # feed/open_data will report the malformed manifest
            else:
                slots.append(DataSlot(address, index, _data_size(manifest, index)))
        return slots

    def open_data(self, slot: DataSlot, stored: bytes | bytearray | memoryview, *, verified: bool = False) -> bytearray:
        """Verify and decrypt data chunk ``slot``; return its plaintext. Leaves the decoder's state alone.

        Raises:
            IntegrityError: the bytes are not that chunk or fail authentication.
        """
        address = slot.address
        if not verified and hashlib.sha256(stored).digest() != address:
            raise IntegrityError(f"chunk {address.hex()} does not match its address", address=address)
        if len(stored) != slot.size + TAG_SIZE:
            raise IntegrityError(
                f"chunk {address.hex()} holds {len(stored) - TAG_SIZE} bytes, expected {slot.size}", address=address
            )
        if slot.key is not None:
            return open_keyed(slot.key, stored, address)
        return self._sealer.open(stored, KIND_DATA, 0, slot.index, address)

    def seals_to(self, slot: DataSlot, plain: bytes | bytearray | memoryview) -> bool:
        """True if ``plain`` is data chunk ``slot``'s plaintext: sealed again, it hashes to the slot's address.

        Sealing is deterministic (key and nonce follow from the file key and
        the chunk's position, or from its parent's entry in format 3:
        specs/chunks.md §4 Key derivation, §6.6 Format 3), so plaintext kept
        from an earlier download (a fetcher's part file) is verified without
        fetching the chunk again.  Leaves the decoder's state alone.
        """
        if len(plain) != slot.size:
            return False
        return hashlib.sha256(self.seal_data(slot, plain)).digest() == slot.address

    def seal_data(self, slot: DataSlot, plain: bytes | bytearray | memoryview) -> bytearray:
        """Data chunk ``slot``'s stored bytes sealed again from its plaintext (deterministic, see
        :meth:`seals_to`): what :meth:`open_data` opened, for a caller that kept only the plaintext.
        Leaves the decoder's state alone."""
        if slot.key is not None:
            return seal_keyed(slot.key, plain)
        return self._sealer.seal(plain, KIND_DATA, 0, slot.index)

    def accept_data(self, slot: DataSlot, plain: bytearray) -> bytearray:
        """Move past data chunk ``slot``, whose plaintext :meth:`open_data` returned; return it.

        ``slot`` must be the chunk wanted now (the first of :meth:`data_slots`).
        """
        wanted = self.data_slots(1)
        if not wanted or wanted[0] != slot or len(plain) != slot.size:
            raise LocalChunkError(f"data chunk {slot.index} accepted out of order")
        try:
            return self._advance_data(self._stack[-1], plain)
        except IntegrityError:
            self._failed = True
            raise

    def _feed_data(self, manifest: RootRecord | RootRecordV3, frame: _Frame, address: bytes,
                   stored: bytes | bytearray | memoryview) -> bytearray:
        index = self._data_index
        if isinstance(manifest, RootRecordV3):
            return self._advance_data(None, self.open_data(_slot_v3(frame, frame.pos - 1, index, address), stored))
        if index >= manifest.chunk_count:
            raise IntegrityError(f"manifest lists more data chunks than its size allows (at {address.hex()})", address=address)
        plain = self.open_data(DataSlot(address, index, _data_size(manifest, index)), stored, verified=True)  # _feed hashed it
        return self._advance_data(None, plain)

    def _advance_data(self, frame: _Frame | None, plain: bytearray) -> bytearray:
        # feed() has already stepped its frame; accept_data() steps it here.
        manifest = self.manifest
        assert manifest is not None
        if frame is not None:
            frame.pos += 1
        self._data_index += 1
        self._emitted += len(plain)
        if isinstance(manifest, RootRecordV3):
            # Entry lengths were checked to add up to the size (§6.6), so this holds by construction.
            if self.next_address() is None and self._emitted != manifest.size:
                raise IntegrityError(f"manifest {self.root.hex()} data does not add up to its size", address=self.root)
            return plain
        if self.next_address() is None and self._data_index != manifest.chunk_count:
            raise IntegrityError(
                f"manifest {self.root.hex()} lists {self._data_index} data chunks, its size needs {manifest.chunk_count}",
                address=self.root,
            )
        return plain

    # -- format 3 (§6.6): keys and lengths come from the parent's entries

    def _feed_root_v3(self, header: ManifestHeader, address: bytes, stored: bytes | bytearray | memoryview) -> bytearray:
        if len(stored) > MANIFEST_V3_SIZE:
            raise IntegrityError(f"root manifest {address.hex()} is larger than {MANIFEST_V3_SIZE} bytes", address=address)
        view = memoryview(stored)
        root_key = PositionalKeys(self._key).key(KIND_ROOT, 0, 0)
        plain = open_keyed(root_key, view[header.prefix_size:], address, aad=view[:header.prefix_size])
        manifest = RootRecordV3.parse(plain, header, address=address)
        check_entries(manifest.entries, total=manifest.size, data=manifest.depth == 0,
                      max_size=manifest.cdc.max_size, address=address)
        if manifest.depth > 0 and not manifest.children:
            raise IntegrityError(f"root manifest {address.hex()} has depth {manifest.depth} but no children",
                                 address=address)
        self.manifest = manifest
        self._node_counts = [0] * manifest.depth
        self._stack.append(_Frame(manifest.depth, manifest.children, manifest.entries))
        return bytearray()

    def _feed_index_v3(self, manifest: RootRecordV3, frame: _Frame, address: bytes,
                       stored: bytes | bytearray | memoryview) -> bytearray:
        level = frame.child_level
        header = parse_header(stored, kind=KIND_INDEX, level=level, version=FORMAT_V3, address=address)
        if len(stored) > MANIFEST_V3_SIZE:
            raise IntegrityError(f"index node {address.hex()} is larger than {MANIFEST_V3_SIZE} bytes", address=address)
        view = memoryview(stored)
        pos = frame.pos - 1
        entries = bytes(open_keyed(entry_key(frame.entries, pos), view[header.prefix_size:], address,
                                   aad=view[:header.prefix_size]))
        check_entries(entries, total=entry_length(frame.entries, pos), data=level == 1,
                      max_size=manifest.cdc.max_size, address=address)
        self._stack.append(_Frame(level - 1, header.children, entries))
        return bytearray()

    def _check_root(self, manifest: RootRecord, address: bytes, stored_size: int) -> None:
        if stored_size > manifest.chunk_size:  # §6.2: a manifest chunk fits in one chunk
            raise IntegrityError(f"root manifest {address.hex()} is larger than its chunk size", address=address)
        count = len(manifest.children) // ADDRESS_SIZE
        if manifest.depth == 0 and count != manifest.chunk_count:
            raise IntegrityError(
                f"root manifest {address.hex()} lists {count} data chunks, its size needs {manifest.chunk_count}",
                address=address,
            )
        if manifest.depth > 0 and count < 1:
            raise IntegrityError(f"root manifest {address.hex()} has depth {manifest.depth} but no children", address=address)
