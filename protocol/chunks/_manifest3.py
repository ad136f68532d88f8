"""Format-3 manifest chunks: content-defined data chunks (specs/chunks.md §6.6 Format 3).

The cleartext part is format 2's (header with ``version`` = 3, then the child
addresses), so a verify-cap walker reads both formats alike. The sealed
private part starts with one fixed-width entry per child, in child order:

    length (64 bits)  plaintext bytes of the file under that child (a data
                      chunk's own length; an index chunk's children's sum)
    key (256 bits)    the child's single-use AES-256-GCM key (§4.4)

and, in the root, the canonical msgpack map follows the entries: size, the
CDC parameters the file was cut with, name, media type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._cdc import CdcParams
from ._crypto import ADDRESS_SIZE, KEY_SIZE
from ._errors import IntegrityError, LocalChunkError
from ._manifest import (
    ENTRY_SIZE,
    FORMAT_V3,
    MAX_DEPTH,
    MAX_FANOUT_V3,
    MAX_FILE_SIZE,
    MAX_MEDIA_TYPE_BYTES,
    MAX_NAME_BYTES,
    ManifestHeader,
    _int,
    _opt_str,
    _pack,
    _unpack,
)

_LENGTH = struct.Struct(">Q")
_ROOT_KEYS_V3 = ("v", "size", "cdc_min", "cdc_avg", "cdc_max", "cdc_nc", "name", "type")
assert ENTRY_SIZE == _LENGTH.size + KEY_SIZE


def pack_entry(length: int, key: bytes) -> bytes:
    """One child's entry: plaintext length (64 bits) || key (32 bytes)."""
    return _LENGTH.pack(length) + key


def entry_length(entries: bytes | bytearray, i: int) -> int:
    """The length field of entry ``i``."""
    return int(_LENGTH.unpack_from(entries, i * ENTRY_SIZE)[0])


def entry_key(entries: bytes | bytearray, i: int) -> bytes:
    """The key field of entry ``i``."""
    start = i * ENTRY_SIZE + _LENGTH.size
    return bytes(entries[start:start + KEY_SIZE])


def entries_total(entries: bytes | bytearray) -> int:
    """Sum of the length fields of packed entries."""
    return sum(entry_length(entries, i) for i in range(len(entries) // ENTRY_SIZE))


@dataclass(frozen=True, slots=True, kw_only=True)
class RootRecordV3:
    """The decrypted root manifest of a format-3 file.

    ``children`` are the addresses the root points at (data chunks when
    ``depth`` is 0, index chunks of level ``depth`` otherwise); ``entries``
    their packed (length, key) entries, in the same order.
    """

    size: int
    cdc: CdcParams
    depth: int
    children: bytes
    entries: bytes
    name: str | None = None
    media_type: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.size <= MAX_FILE_SIZE:
            raise LocalChunkError(f"file size out of range: {self.size}")
        if not 0 <= self.depth <= MAX_DEPTH:
            raise LocalChunkError(f"tree depth out of range: {self.depth}")
        count = len(self.children) // ADDRESS_SIZE
        if len(self.children) % ADDRESS_SIZE or count > MAX_FANOUT_V3 or len(self.entries) != count * ENTRY_SIZE:
            raise LocalChunkError("root child list is not a whole number of addresses and entries within the fanout")
        if self.name is not None and len(self.name.encode()) > MAX_NAME_BYTES:
            raise LocalChunkError(f"name longer than {MAX_NAME_BYTES} bytes")
        if self.media_type is not None and len(self.media_type.encode()) > MAX_MEDIA_TYPE_BYTES:
            raise LocalChunkError(f"media type longer than {MAX_MEDIA_TYPE_BYTES} bytes")

    @property
    def version(self) -> int:
        return FORMAT_V3

    def serialize_map(self) -> bytes:
        """The map after the entries: canonical msgpack, keys in the order of §6.6."""
        fields: dict[str, object] = {
            "v": FORMAT_V3,
            "size": self.size,
            "cdc_min": self.cdc.min_size,
            "cdc_avg": self.cdc.avg_size,
            "cdc_max": self.cdc.max_size,
            "cdc_nc": self.cdc.normalization,
        }
        if self.name is not None:
            fields["name"] = self.name
        if self.media_type is not None:
            fields["type"] = self.media_type
        return _pack(fields)

    def serialize_private(self) -> bytes:
        """The whole private part: entries || map."""
        return self.entries + self.serialize_map()

    @classmethod
    def parse(cls, data: bytes | bytearray, header: ManifestHeader, *, address: bytes) -> RootRecordV3:
        """Build the root from its checked header and decrypted private part; IntegrityError names ``address``."""
        split = header.count * ENTRY_SIZE
        entries, packed = bytes(data[:split]), bytes(data[split:])
        fields = _unpack(packed, address, _ROOT_KEYS_V3, "root manifest")
        if fields.get("v") != FORMAT_V3:
            raise IntegrityError(f"root manifest {address.hex()} has unknown format version {fields.get('v')!r}",
                                 address=address)
        try:
            record = cls(
                size=_int(fields, "size", address),
                cdc=CdcParams(
                    min_size=_int(fields, "cdc_min", address),
                    avg_size=_int(fields, "cdc_avg", address),
                    max_size=_int(fields, "cdc_max", address),
                    normalization=_int(fields, "cdc_nc", address),
                ),
                depth=header.level,
                children=header.children,
                entries=entries,
                name=_opt_str(fields, "name", address),
                media_type=_opt_str(fields, "type", address),
            )
        except LocalChunkError as exc:
            raise IntegrityError(f"root manifest {address.hex()} is invalid: {exc}", address=address) from None
        if record.serialize_map() != packed:
            raise IntegrityError(f"root manifest {address.hex()} is not canonical msgpack", address=address)
        return record


def check_entries(entries: bytes, *, total: int, data: bool, max_size: int, address: bytes) -> None:
    """Check a manifest chunk's entries against the length its parent gave it (§6.6 Reading).

    Every length is at least 1 and, for data chunks, at most ``max_size``;
    the lengths add up to ``total``.
    """
    lengths = [entry_length(entries, i) for i in range(len(entries) // ENTRY_SIZE)]
    if any(n < 1 or (data and n > max_size) for n in lengths) or sum(lengths) != total:
        raise IntegrityError(f"manifest {address.hex()} has child lengths that do not add up to {total}",
                             address=address)
