"""The chunk store's errors and its one argument check (specs/chunks.md §8)."""

from __future__ import annotations

from protocol.chunks import ADDRESS_SIZE


class StoreError(Exception):
    """Base class of chunk store errors. ``address`` names the chunk, if any."""

    def __init__(self, message: str, address: bytes | None = None) -> None:
        super().__init__(message)
        self.address = address


class StoreFull(StoreError):
    """The chunk would take the store over its quota (or the disk is full)."""


class ChunkNotFound(StoreError):
    """No chunk with that address is stored."""


class ChunkCorrupt(StoreError):
    """A stored chunk no longer hashes to its address; it is never returned."""


class ChunkMismatch(StoreError, ValueError):
    """``put`` was given bytes that do not hash to the given address."""


def check_address(address: bytes | bytearray) -> bytes:
    """``address`` as bytes if it is a chunk address (SHA-256, ``ADDRESS_SIZE`` bytes).

    Raises:
        ValueError: anything else.
    """
    if not isinstance(address, (bytes, bytearray)) or len(address) != ADDRESS_SIZE:
        raise ValueError(f"a chunk address is {ADDRESS_SIZE} bytes")
    return bytes(address)
