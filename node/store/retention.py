"""Paid retention and pins on a host: what stays, what the GC takes (specs/network.md §7, specs/chunks.md §8.6).

A chunk stored through a paid PUT is kept until ``paid_until`` (the host's
retention period from the time of the PUT; a later PUT of the same chunk
extends it).  Chunks the node added itself (``mu add``) or fetched for
``mu pin`` are pinned and never collected.

Two layers, one module:

* :class:`RetentionBook`, owned by ``ChunkStore``: the per-chunk paid-until
  times and pins in the store's index (specs/chunks.md §8.6 Retention
  metadata: paid-until and pins), and the deletion of expired chunks.  Its
  lock serialises a GC deletion with a paid PUT's retention update, so a
  chunk paid for again while being collected is never lost.
* :class:`GarbageCollector`, run in the daemon's nursery: every ``period``
  seconds it deletes the unpinned chunks whose paid retention ran out and
  withdraws our provider records for them; ``mu store gc`` runs the same
  pass offline (:func:`collect_once`).

Time comes from an injected ``wall_clock`` (unix seconds), so tests move it
forward instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import trio

from protocol.chunks import Link, RawWalker
from protocol.fetch import dht_key

from ._errors import StoreError, check_address
from ._index import ChunkIndex
from ._writer import Chunk, ChunkWriter

log = logging.getLogger("mu.retention")

# Roots one store may pin: the DHT's bound on our own provider records
# (MAX_OWN_PROVIDED_KEYS, specs/dht.md §2 Conventions and definitions), since each pinned root is announced.
MAX_PINNED_ROOTS = 65536
# Expired chunks listed and deleted per GC batch (the pass loops until none is left).
GC_BATCH = 4096
# Seconds between two GC passes of a running node (``mu node --gc-period``).
DEFAULT_GC_PERIOD = 600.0

WallClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """One stored chunk's index row: size and retention metadata."""

    address: bytes
    size: int
    paid_until: int | None  # unix seconds; None: nobody paid to store it
    pinned: bool


class RetentionBook:
    """Paid retention and pins of one store's chunks, kept in its index.

    Args:
        index: the store's index (the paid_until and pinned columns, the pins table).
        writer: the store's writer, to store paid chunks and delete expired ones.
    """

    def __init__(self, index: ChunkIndex, writer: ChunkWriter) -> None:
        self._index = index
        self._writer = writer
        self._lock = threading.Lock()

    def meta(self, address: bytes) -> ChunkMeta | None:
        """The chunk's index row (size, paid_until, pinned), or None if not indexed."""
        address = check_address(address)
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
        address = check_address(address)
        with self._lock:
            return self._index.extend_retention([address], int(until)) > 0

    def put_retained(self, address: bytes, data: Chunk, until: int, *, verify: bool = True) -> bool:
        """Store a paid chunk and keep it at least until ``until``; True if it was new.

        A chunk already held only has its retention extended.  Safe against
        a concurrent GC pass: if the GC took the chunk between the write and
        the retention update, it is written again under the retention lock.
        ``verify=False`` skips re-hashing for a caller that already checked
        the bytes against the address (the paid PUT handler does).
        """
        until = int(until)
        # A new chunk's row carries its retention from its one index commit;
        # a chunk already held has it extended.
        stored = self._writer.put_many([(address, data)], verify=verify, paid_until=until, direct=True) == 1
        with self._lock:
            if stored:
                row = self._index.meta_of(address)
                kept = row is not None and row[0] is not None and row[0] >= until
            else:
                kept = self._index.extend_retention([address], until) > 0
            if not kept:
                stored = self._writer.put_many([(address, data)], verify=verify) == 1 or stored
                self._index.extend_retention([address], until)
        return stored

    def pin(self, addresses: Iterable[bytes], *, root: bytes | None = None, now: int | None = None) -> int:
        """Pin stored chunks (never collected) and record ``root`` as pinned, durably.

        Returns how many stored chunks were marked; unknown addresses are skipped.

        Raises:
            StoreError: ``root`` would be past ``MAX_PINNED_ROOTS`` pinned roots.
        """
        if root is not None and not self._index.is_pinned_root(check_address(root)) \
                and self._index.pin_count() >= MAX_PINNED_ROOTS:
            raise StoreError(f"already {MAX_PINNED_ROOTS} pinned roots: unpin one first", root)
        when = int(time.time()) if now is None else now
        checked = [check_address(a) for a in addresses]
        return self._index.set_pinned(checked, True, root=None if root is None else check_address(root), now=when)

    def unpin(self, addresses: Iterable[bytes], *, root: bytes | None = None) -> int:
        """Clear the pin of chunks (and forget ``root``); they expire by their paid_until."""
        checked = [check_address(a) for a in addresses]
        return self._index.set_pinned(checked, False, root=None if root is None else check_address(root),
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
            with self._lock:
                row = self._index.meta_of(address)
                if row is None or row[1] or row[0] is None or row[0] > now:
                    continue
                if self._writer.delete(address):
                    removed.append(address)
        return removed


class RetainingStore(Protocol):
    """What the GC and the pin helpers use of a ``ChunkStore``."""

    def get(self, address: bytes, *, verify: bool = True) -> bytes: ...

    def has(self, address: bytes) -> bool: ...

    def pin(self, addresses: Iterable[bytes], *, root: bytes | None = None, now: int | None = None) -> int: ...

    def meta(self, address: bytes) -> ChunkMeta | None: ...

    def expired(self, now: int, limit: int = GC_BATCH) -> list[bytes]: ...

    def collect_expired(self, now: int, limit: int = GC_BATCH) -> list[bytes]: ...


def file_addresses(store: RetainingStore, link: Link) -> list[bytes]:
    """Every chunk address of ``link``'s file (root, manifests, data), walking the local copy.

    Walks the verify cap (the cleartext manifest headers, specs/chunks.md
    §6.5 Walking with the bare root), so a bare root is enough and nothing
    is decrypted.

    Raises:
        node.store.ChunkNotFound: a chunk of the file is not in the store.
        protocol.chunks.IntegrityError: the store holds wrong bytes.
    """
    walker = RawWalker(link.root)
    addresses: list[bytes] = []
    while (address := walker.next_address()) is not None:
        walker.feed(store.get(address))
        addresses.append(address)
    return addresses


def holds_file(store: RetainingStore, root: bytes) -> bool:
    """Whether every chunk of the file at ``root`` (manifests and data) is in the store.

    Walks the verify cap as ``file_addresses`` does; the manifests are read
    unverified, since the store checked each chunk against its address when
    it took it.
    """
    walker = RawWalker(root)
    while (address := walker.next_address()) is not None:
        if not store.has(address):
            return False
        walker.feed(store.get(address, verify=False))
    return True


def pin_file(store: RetainingStore, link: Link, now: int | None = None) -> int:
    """Pin every chunk of ``link``'s file and record its root, durably; return chunks pinned."""
    return store.pin(file_addresses(store, link), root=link.root, now=now)


class Withdrawer(Protocol):
    """What the GC needs of the DHT node: stop republishing our record for a key."""

    def withdraw_provider(self, key: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one GC pass did."""

    now: int
    removed: tuple[bytes, ...]
    bytes_freed: int


def collect_once(store: RetainingStore, now: int, dht: Withdrawer | None = None, *,
                 batch: int = GC_BATCH) -> GcReport:
    """Delete every unpinned chunk whose paid retention ended at or before ``now``.

    Runs batches of ``batch`` until none is left.  For each chunk removed,
    our provider record for its DHT key (if any) stops being republished.
    """
    removed: list[bytes] = []
    freed = 0
    while True:
        sizes = {}
        for address in store.expired(now, batch):
            meta = store.meta(address)
            sizes[address] = meta.size if meta is not None else 0
        if not sizes:
            break
        gone = store.collect_expired(now, batch)
        if not gone:
            break
        for address in gone:
            freed += sizes.get(address, 0)
            if dht is not None:
                dht.withdraw_provider(dht_key(address))
        removed.extend(gone)
        if len(gone) < batch:
            break
    return GcReport(now=now, removed=tuple(removed), bytes_freed=freed)


class GarbageCollector:
    """The daemon's periodic GC pass (``nursery.start(gc.serve)``)."""

    def __init__(self, store: RetainingStore, *, dht: Withdrawer | None = None, period: float = DEFAULT_GC_PERIOD,
                 wall_clock: WallClock = time.time) -> None:
        if period <= 0:
            raise ValueError("the GC period must be positive")
        self.store = store
        self.dht = dht
        self.period = period
        self.wall_clock = wall_clock
        self.passes = 0
        self.removed_total = 0
        self._lock = trio.Lock()
        self._pass_done = trio.Event()

    async def collect(self) -> GcReport:
        """Run one pass now (also what the periodic loop calls)."""
        async with self._lock:  # one pass at a time
            now = int(self.wall_clock())
            report = await trio.to_thread.run_sync(collect_once, self.store, now, self.dht)
        self.passes += 1
        self.removed_total += len(report.removed)
        self._pass_done.set()
        self._pass_done = trio.Event()
        if report.removed:
            log.info("gc: removed %d expired chunks (%d bytes) at %d: %s", len(report.removed), report.bytes_freed,
                     now, " ".join(a.hex()[:16] for a in report.removed[:8]))
        else:
            log.debug("gc: nothing expired at %d", now)
        return report

    async def wait_passes(self, count: int) -> None:
        """Return once ``count`` passes have completed since start."""
        while self.passes < count:
            await self._pass_done.wait()

    def status(self) -> dict[str, object]:
        return {"passes": self.passes, "removed": self.removed_total, "period": self.period}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.period)  # the pass's schedule, not synchronisation
            try:
                await self.collect()
            except Exception:  # a failing pass must not stop the node; the next one retries
                log.exception("gc pass failed")
