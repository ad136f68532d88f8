"""Manifest chunks: the root and the index nodes of a file's tree (specs/chunks.md §6 Manifest).

Format 2 splits every manifest chunk in two (§6.1): a cleartext, fixed-layout
header with the child addresses, readable by anyone holding the root (a
verify cap), then the AES-256-GCM ciphertext of the private part with the
whole cleartext prefix as associated data, so a key holder still detects
any change to it. The private part of the root is a canonical msgpack map
(size, chunk size, name, media type); an index node's private part is empty.
Child addresses are packed back to back so a node decodes without one Python
object per address.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import msgpack

from ._crypto import ADDRESS_SIZE, KIND_INDEX, KIND_ROOT, TAG_SIZE
from ._errors import IntegrityError, LocalChunkError
from ._sizes import (DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE as MAX_CHUNK_SIZE,
                     MIN_CHUNK_SIZE as MIN_CHUNK_SIZE)

FORMAT_VERSION = 2
# Format 3 (§6.6 Format 3): content-defined data chunks; every manifest chunk's
# private part carries one entry (plaintext length, key) per child.
FORMAT_V3 = 3
ENTRY_SIZE = 40
# Room kept free in every manifest chunk for the map keys and the optional
# name and media type, so the root holds as many addresses as an index node.
MANIFEST_RESERVED = 2048
MAX_NAME_BYTES = 1024
MAX_MEDIA_TYPE_BYTES = 255
# Deepest tree a decoder follows; bounds its memory to MAX_DEPTH open nodes.
MAX_DEPTH = 16
MAX_FILE_SIZE = 2**64 - 1
# Cleartext header of a manifest chunk (§6.1): version, kind, level, reserved, count.
HEADER = struct.Struct(">BBBBI")
HEADER_SIZE = HEADER.size
# Largest private part of a root: its msgpack map with the longest name and
# media type fits well within MANIFEST_RESERVED (§6.2).
MAX_ROOT_PRIVATE = MANIFEST_RESERVED

_ROOT_KEYS = ("v", "size", "chunk_size", "name", "type")


def check_chunk_size(chunk_size: int) -> int:
    """Return ``chunk_size`` if it is a power of two in [64 KiB, 4 MiB]."""
    if (
        not isinstance(chunk_size, int)
        or chunk_size < MIN_CHUNK_SIZE
        or chunk_size > MAX_CHUNK_SIZE
        or chunk_size & (chunk_size - 1)
    ):
        raise LocalChunkError(f"chunk size must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}, got {chunk_size!r}")
    return chunk_size


def max_fanout(chunk_size: int) -> int:
    """Most child addresses one manifest chunk (root or index node) may hold."""
    return (chunk_size - MANIFEST_RESERVED) // ADDRESS_SIZE


# The most addresses any conforming manifest chunk holds, whatever its chunk size:
# what a verify-cap walker, which does not know the chunk size, accepts (§6.5).
MAX_FANOUT = max_fanout(MAX_CHUNK_SIZE)
# Format 3: manifest chunks are at most MANIFEST_V3_SIZE bytes, and each child
# costs its address (cleartext) and its entry (sealed).
MANIFEST_V3_SIZE = 1024 * 1024
MAX_FANOUT_V3 = (MANIFEST_V3_SIZE - MANIFEST_RESERVED) // (ADDRESS_SIZE + ENTRY_SIZE)


def manifest_prefix(kind: int, level: int, children: bytes, version: int = FORMAT_VERSION) -> bytes:
    """The cleartext part of a manifest chunk: header || child addresses (§6.1)."""
    return HEADER.pack(version, kind, level, 0, len(children) // ADDRESS_SIZE) + children


@dataclass(frozen=True, slots=True)
class ManifestHeader:
    """The cleartext part of a manifest chunk, checked against the format's bounds.

    ``prefix_size`` is where the sealed private part starts; ``level`` is the
    tree depth for a root, the node's level for an index chunk.
    """

    kind: int
    level: int
    children: bytes
    prefix_size: int
    version: int = FORMAT_VERSION

    @property
    def count(self) -> int:
        return len(self.children) // ADDRESS_SIZE


def parse_header(stored: bytes | bytearray | memoryview, *, kind: int, address: bytes,
                 level: int | None = None, version: int | None = None) -> ManifestHeader:
    """Parse and bound-check the cleartext header of a manifest chunk (§6.1, §6.5, §6.6).

    Needs no key: this is what a verify cap can read. ``level`` is the level
    the tree position requires (None for a root, whose level is its depth);
    ``version`` is the root's version for an index chunk (None for a root,
    which may be format 2 or 3). Raises IntegrityError naming ``address`` on
    any flaw.
    """
    view = memoryview(stored)
    what = "root manifest" if kind == KIND_ROOT else "index node"
    if len(view) < HEADER_SIZE + TAG_SIZE:
        raise IntegrityError(f"{what} {address.hex()} is shorter than a manifest header", address=address)
    got_version, got_kind, got_level, reserved, count = HEADER.unpack_from(view, 0)
    if got_version not in (FORMAT_VERSION, FORMAT_V3) or (version is not None and got_version != version):
        raise IntegrityError(f"{what} {address.hex()} has unknown format version {got_version}", address=address)
    if got_kind != kind or reserved != 0:
        raise IntegrityError(f"{what} {address.hex()} has kind {got_kind}/reserved {reserved}, expected {kind}/0",
                             address=address)
    if got_level > MAX_DEPTH or (level is not None and got_level != level):
        raise IntegrityError(f"{what} {address.hex()} has level {got_level}, expected {level}", address=address)
    if count > MAX_FANOUT:
        raise IntegrityError(f"{what} {address.hex()} lists {count} addresses, more than {MAX_FANOUT}",
                             address=address)
    prefix = HEADER_SIZE + count * ADDRESS_SIZE
    sealed = len(view) - prefix
    if got_version == FORMAT_V3:
        # One (length, key) entry per child precedes the root's map (§6.6).
        if count > MAX_FANOUT_V3:
            raise IntegrityError(f"{what} {address.hex()} lists {count} addresses, more than {MAX_FANOUT_V3}",
                                 address=address)
        sealed -= count * ENTRY_SIZE
    if kind == KIND_INDEX:
        # An index node's private part is empty: exactly one tag follows.
        if count < 1 or sealed != TAG_SIZE:
            raise IntegrityError(f"index node {address.hex()} has a bad address count or length", address=address)
    elif sealed < TAG_SIZE or sealed > MAX_ROOT_PRIVATE + TAG_SIZE or (got_level > 0 and count < 1):
        raise IntegrityError(f"root manifest {address.hex()} has a bad address count or length", address=address)
    return ManifestHeader(got_kind, got_level, bytes(view[HEADER_SIZE:prefix]), prefix, got_version)


@dataclass(frozen=True, slots=True, kw_only=True)
class RootRecord:
    """The decrypted root manifest of a file.

    ``children`` are the addresses the root points at: data chunks when
    ``depth`` is 0, index nodes of level ``depth`` otherwise.
    """

    size: int
    chunk_size: int
    depth: int
    children: bytes
    name: str | None = None
    media_type: str | None = None

    def __post_init__(self) -> None:
        check_chunk_size(self.chunk_size)
        if not 0 <= self.size <= MAX_FILE_SIZE:
            raise LocalChunkError(f"file size out of range: {self.size}")
        if not 0 <= self.depth <= MAX_DEPTH:
            raise LocalChunkError(f"tree depth out of range: {self.depth}")
        if len(self.children) % ADDRESS_SIZE or len(self.children) // ADDRESS_SIZE > max_fanout(self.chunk_size):
            raise LocalChunkError("root child list is not a whole number of addresses within the fanout")
        if self.name is not None and len(self.name.encode()) > MAX_NAME_BYTES:
            raise LocalChunkError(f"name longer than {MAX_NAME_BYTES} bytes")
        if self.media_type is not None and len(self.media_type.encode()) > MAX_MEDIA_TYPE_BYTES:
            raise LocalChunkError(f"media type longer than {MAX_MEDIA_TYPE_BYTES} bytes")

    @property
    def chunk_count(self) -> int:
        """Number of data chunks the file has."""
        return -(-self.size // self.chunk_size)

    def serialize_private(self) -> bytes:
        """The private part: canonical msgpack of size, chunk size, name, media type (§6.2)."""
        fields: dict[str, object] = {
            "v": FORMAT_VERSION,
            "size": self.size,
            "chunk_size": self.chunk_size,
        }
        if self.name is not None:
            fields["name"] = self.name
        if self.media_type is not None:
            fields["type"] = self.media_type
        return _pack(fields)

    @classmethod
    def parse(cls, data: bytes | bytearray, header: ManifestHeader, *, address: bytes) -> RootRecord:
        """Build the root from its checked header and decrypted private part.

        IntegrityError names ``address`` on any flaw.
        """
        fields = _unpack(data, address, _ROOT_KEYS, "root manifest")
        if fields.get("v") != FORMAT_VERSION:
            raise IntegrityError(f"root manifest {address.hex()} has unknown format version {fields.get('v')!r}", address=address)
        try:
            record = cls(
                size=_int(fields, "size", address),
                chunk_size=_int(fields, "chunk_size", address),
                depth=header.level,
                children=header.children,
                name=_opt_str(fields, "name", address),
                media_type=_opt_str(fields, "type", address),
            )
        except LocalChunkError as exc:
            raise IntegrityError(f"root manifest {address.hex()} is invalid: {exc}", address=address) from None
        if record.serialize_private() != bytes(data):
            raise IntegrityError(f"root manifest {address.hex()} is not canonical msgpack", address=address)
        return record


def _pack(fields: dict[str, object]) -> bytes:
    packed = msgpack.packb(fields, use_bin_type=True)
    assert isinstance(packed, bytes)  # packb without a stream always returns bytes
    return packed


def _unpack(data: bytes | bytearray, address: bytes, allowed: tuple[str, ...], what: str) -> dict[str, object]:
    # Limits are set before decoding so hostile input cannot make us allocate
    # more than the chunk itself (STYLE.md rule 4).
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=len(data),
            max_str_len=MAX_NAME_BYTES,
            max_array_len=0,
            max_map_len=len(allowed),
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise IntegrityError(f"{what} {address.hex()} is not valid msgpack: {exc}", address=address) from None
    if not isinstance(fields, dict) or not set(fields) <= set(allowed):
        raise IntegrityError(f"{what} {address.hex()} has unknown fields", address=address)
    return fields


def _int(fields: dict[str, object], key: str, address: bytes) -> int:
    value = fields.get(key)
    if type(value) is not int:
        raise IntegrityError(f"manifest {address.hex()}: field {key!r} must be an integer", address=address)
    return value


def _bin(fields: dict[str, object], key: str, address: bytes) -> bytes:
    value = fields.get(key)
    if not isinstance(value, bytes):
        raise IntegrityError(f"manifest {address.hex()}: field {key!r} must be bytes", address=address)
    return value


def _opt_str(fields: dict[str, object], key: str, address: bytes) -> str | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise IntegrityError(f"manifest {address.hex()}: field {key!r} must be a string", address=address)
    return value
