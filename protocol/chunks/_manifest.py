"""Manifest records: the root and the index nodes of a file's tree (specs/chunks.md §6).

Both are canonical msgpack maps, encrypted and stored like any chunk. Child
addresses are packed back to back in one ``bin`` field (32 bytes each) so a
node decodes without one Python object per address.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from ._crypto import ADDRESS_SIZE
from ._errors import IntegrityError, LocalChunkError

FORMAT_VERSION = 1
MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024
# Room kept free in every manifest chunk for the map keys and the optional
# name and media type, so the root holds as many addresses as an index node.
MANIFEST_RESERVED = 2048
MAX_NAME_BYTES = 1024
MAX_MEDIA_TYPE_BYTES = 255
# Deepest tree a decoder follows; bounds its memory to MAX_DEPTH open nodes.
MAX_DEPTH = 16
MAX_FILE_SIZE = 2**64 - 1

_ROOT_KEYS = ("v", "size", "chunk_size", "depth", "a", "name", "type")
_INDEX_KEYS = ("v", "level", "a")


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

    def serialize(self) -> bytes:
        fields: dict[str, object] = {
            "v": FORMAT_VERSION,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "depth": self.depth,
            "a": self.children,
        }
        if self.name is not None:
            fields["name"] = self.name
        if self.media_type is not None:
            fields["type"] = self.media_type
        return _pack(fields)

    @classmethod
    def parse(cls, data: bytes | bytearray, *, address: bytes) -> RootRecord:
        """Decode a decrypted root; IntegrityError names ``address`` on any flaw."""
        fields = _unpack(data, address, _ROOT_KEYS, "root manifest")
        if fields.get("v") != FORMAT_VERSION:
            raise IntegrityError(f"root manifest {address.hex()} has unknown format version {fields.get('v')!r}", address=address)
        try:
            record = cls(
                size=_int(fields, "size", address),
                chunk_size=_int(fields, "chunk_size", address),
                depth=_int(fields, "depth", address),
                children=_bin(fields, "a", address),
                name=_opt_str(fields, "name", address),
                media_type=_opt_str(fields, "type", address),
            )
        except LocalChunkError as exc:
            raise IntegrityError(f"root manifest {address.hex()} is invalid: {exc}", address=address) from None
        if record.serialize() != bytes(data):
            raise IntegrityError(f"root manifest {address.hex()} is not canonical msgpack", address=address)
        return record


def serialize_index(level: int, children: bytes) -> bytes:
    """Encode an index node of ``level`` (>= 1) listing ``children``."""
    return _pack({"v": FORMAT_VERSION, "level": level, "a": children})


def _pack(fields: dict[str, object]) -> bytes:
    packed = msgpack.packb(fields, use_bin_type=True)
    assert isinstance(packed, bytes)  # packb without a stream always returns bytes
    return packed


def parse_index(data: bytes | bytearray, *, level: int, chunk_size: int, address: bytes) -> bytes:
    """Decode an index node expected at ``level``; return its packed child addresses."""
    fields = _unpack(data, address, _INDEX_KEYS, "index node")
    if fields.get("v") != FORMAT_VERSION or fields.get("level") != level:
        raise IntegrityError(f"index node {address.hex()} has wrong version or level", address=address)
    children = _bin(fields, "a", address)
    count, rest = divmod(len(children), ADDRESS_SIZE)
    if rest or not 1 <= count <= max_fanout(chunk_size):
        raise IntegrityError(f"index node {address.hex()} lists a bad number of addresses", address=address)
    if serialize_index(level, children) != bytes(data):
        raise IntegrityError(f"index node {address.hex()} is not canonical msgpack", address=address)
    return children


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
