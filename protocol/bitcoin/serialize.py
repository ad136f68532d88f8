"""Bitcoin's consensus serialization primitives: CompactSize and a bounded reader.

One read primitive (:class:`Reader`) is used by every decoder in this package
so that bounds, truncation and trailing-byte checks live in one place
(``specs/payments.md`` §3 Serialization).  All integers are little-endian, as in Bitcoin.
"""

from __future__ import annotations

import hashlib
import struct

from protocol.bitcoin.errors import DecodeError

# Bitcoin Core's MAX_SIZE (serialize.h): no CompactSize above this is accepted.
MAX_COMPACT_SIZE = 0x02000000

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")


def sha256(data: bytes) -> bytes:
    """Single SHA-256."""
    return hashlib.sha256(data).digest()


def hash256(data: bytes) -> bytes:
    """Bitcoin's double SHA-256 (txid, sighash, bech32-independent hashes)."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def compact_size(n: int) -> bytes:
    """Encode ``n`` as a minimal CompactSize (1, 3, 5 or 9 bytes)."""
    if n < 0:
        raise ValueError("CompactSize cannot be negative")
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + _U16.pack(n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + _U32.pack(n)
    if n <= 0xFFFFFFFFFFFFFFFF:
        return b"\xff" + _U64.pack(n)
    raise ValueError("CompactSize above 2**64-1")


def var_bytes(data: bytes) -> bytes:
    """CompactSize length prefix followed by ``data``."""
    return compact_size(len(data)) + data


def u32(n: int) -> bytes:
    """Unsigned 32-bit little-endian."""
    return _U32.pack(n)


def i64(n: int) -> bytes:
    """Signed 64-bit little-endian (output amounts)."""
    return _I64.pack(n)


class Reader:
    """Bounded cursor over a byte string.

    Every read checks the remaining length before slicing, and every length
    prefix is checked against ``MAX_COMPACT_SIZE`` and the bytes actually left
    before anything is allocated for it.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not yet consumed."""
        return len(self._data) - self._pos

    def read(self, n: int) -> bytes:
        """Consume exactly ``n`` bytes or raise :class:`DecodeError`."""
        if n < 0 or n > self.remaining:
            raise DecodeError(f"truncated: wanted {n} bytes, {self.remaining} left")
        start = self._pos
        self._pos = start + n
        return self._data[start : self._pos]

    def peek(self, n: int) -> bytes:
        """Return the next ``n`` bytes (or fewer at the end) without consuming."""
        return self._data[self._pos : self._pos + n]

    def u8(self) -> int:
        return self.read(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.read(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.read(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self.read(8))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.read(8))[0])

    def compact_size(self) -> int:
        """Read a CompactSize, rejecting non-minimal forms and values above MAX_COMPACT_SIZE."""
        first = self.u8()
        if first < 0xFD:
            n = first
        elif first == 0xFD:
            n = self.u16()
            if n < 0xFD:
                raise DecodeError("non-minimal CompactSize")
        elif first == 0xFE:
            n = self.u32()
            if n <= 0xFFFF:
                raise DecodeError("non-minimal CompactSize")
        else:
            n = self.u64()
            if n <= 0xFFFFFFFF:
                raise DecodeError("non-minimal CompactSize")
        if n > MAX_COMPACT_SIZE:
            raise DecodeError(f"CompactSize {n} above limit {MAX_COMPACT_SIZE}")
        return n

    def var_bytes(self) -> bytes:
        """Read a CompactSize-prefixed byte string (length checked before reading)."""
        n = self.compact_size()
        if n > self.remaining:
            raise DecodeError(f"truncated: length prefix {n}, {self.remaining} left")
        return self.read(n)

    def count(self, min_item_size: int) -> int:
        """Read an item count and reject it if the rest cannot hold that many items.

        ``min_item_size`` is the smallest encoding of one item, so a count
        of a billion with ten bytes left fails here, not after allocation.
        """
        n = self.compact_size()
        if n * min_item_size > self.remaining:
            raise DecodeError(f"count {n} cannot fit in {self.remaining} bytes")
        return n

    def finish(self) -> None:
        """Raise :class:`DecodeError` if any bytes are left unread."""
        if self.remaining:
            raise DecodeError(f"{self.remaining} trailing bytes")
