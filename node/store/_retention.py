"""Retention metadata of the chunk store: paid-until times and pins (specs/chunks.md §8.6).

Mixed into ``ChunkStore``: these methods use its index, its ``put`` and
``delete``, and its retention lock, which serialises a GC deletion with a
paid PUT's retention update so a chunk paid for again while being
collected is never lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._index import ChunkIndex

if TYPE_CHECKING:
    from ._store import ChunkStore

ADDRESS_SIZE = 32
# Roots one store may pin: the DHT's bound on our own provider records
# (MAX_OWN_PROVIDED_KEYS, specs/dht.md), since each pinned root is announced.
MAX_PINNED_ROOTS = 65536
# Expired chunks listed and deleted per GC batch (the pass loops until none is left).
GC_BATCH = 4096


def _check_address(address: bytes) -> bytes:
    if not isinstance(address, (bytes, bytearray)) or len(address) != ADDRESS_SIZE:
        raise ValueError(f"a chunk address is {ADDRESS_SIZE} bytes")
    return bytes(address)


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """One stored chunk's index row: size and retention metadata."""

    address: bytes
    size: int
    paid_until: int | None  # unix seconds; None: nobody paid to store it
    pinned: bool


class RetentionMixin:
    """Paid retention and pins, for :class:`ChunkStore`."""

    _index: ChunkIndex
    _retention_lock: threading.Lock

    # -- retention (specs/chunks.md §8.6) --------------------------------

    def meta(self, address: bytes) -> ChunkMeta | None:
        """The chunk's index row (size, paid_until, pinned), or None if not indexed."""
        address = _check_address(address)
        size = self._index.size_of(address)
        row = self._index.meta_of(address)
        if size is None or row is None:
            return None
        return ChunkMeta(address, size, row[0], row[1])

    def entries_meta(self) -> Iterator[ChunkMeta]:
        """Every indexed chunk with its retention metadata, in address order."""
        for address, size, until, pinned in self._index.iter_meta():
            yield ChunkMeta(address, size, until, pinned)

    def extend_retention(self, address: bytes, until: int) -> bool:
        """Keep the chunk at least until ``until`` (the later of old and new wins).

        Returns False if the chunk is not stored.
        """
        address = _check_address(address)
        with self._retention_lock:
            return self._index.extend_retention([address], int(until)) > 0

    def put_retained(self, address: bytes, data: bytes | bytearray | memoryview, until: int, *,
                     verify: bool = True) -> bool:
        """Store a paid chunk and keep it at least until ``until``; True if it was new.

        A chunk already held only has its retention extended.  Safe against
        a concurrent GC pass: if the GC took the chunk between the write and
        the retention update, it is written again under the retention lock.
        ``verify=False`` skips re-hashing for a caller that already checked
        the bytes against the address (the paid PUT handler does).
        """
        store: ChunkStore = self  # type: ignore[assignment]
        stored = store.put(address, data, verify=verify)
        with self._retention_lock:
            if self._index.extend_retention([address], int(until)) == 0:
                stored = store.put(address, data, verify=verify) or stored
                self._index.extend_retention([address], int(until))
        return stored

    def pin(self, addresses: Iterable[bytes], *, root: bytes | None = None, now: int | None = None) -> int:
        """Pin stored chunks (never collected) and record ``root`` as pinned, durably.

        Returns how many stored chunks were marked; unknown addresses are skipped.

        Raises:
            StoreError: ``root`` would be past ``MAX_PINNED_ROOTS`` pinned roots.
        """
        from ._store import StoreError

        if root is not None and not self._index.is_pinned_root(_check_address(root)) \
                and self._index.pin_count() >= MAX_PINNED_ROOTS:
            raise StoreError(f"already {MAX_PINNED_ROOTS} pinned roots: unpin one first", root)
        when = int(time.time()) if now is None else now
        checked = [_check_address(a) for a in addresses]
        return self._index.set_pinned(checked, True, root=None if root is None else _check_address(root), now=when)

    def unpin(self, addresses: Iterable[bytes], *, root: bytes | None = None) -> int:
        """Clear the pin of chunks (and forget ``root``); they expire by their paid_until."""
        checked = [_check_address(a) for a in addresses]
        return self._index.set_pinned(checked, False, root=None if root is None else _check_address(root),
                                      now=int(time.time()))

    def pinned_roots(self) -> list[bytes]:
        """Roots pinned on this node, oldest first (re-announced after a restart)."""
        return self._index.pinned_roots()

    def expired(self, now: int, limit: int = GC_BATCH) -> list[bytes]:
        """Unpinned chunks whose paid retention ran out (paid_until <= now), oldest first."""
        return [address for address, _until in self._index.expired(int(now), limit)]

    def collect_expired(self, now: int, limit: int = GC_BATCH) -> list[bytes]:
        """Delete unpinned chunks whose paid retention ran out; return their addresses.

        Each is re-checked under the retention lock just before deletion, so
        a PUT that extended it meanwhile keeps it.
        """
        removed: list[bytes] = []
        for address in self.expired(now, limit):
            with self._retention_lock:
                row = self._index.meta_of(address)
                if row is None or row[1] or row[0] is None or row[0] > now:
                    continue
                if self.delete(address):  # type: ignore[attr-defined]
                    removed.append(address)
        return removed
