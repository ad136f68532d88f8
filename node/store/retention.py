"""Paid retention and pins on a host: what stays, what the GC takes (specs/network.md §7).

A chunk stored through a paid PUT is kept until ``paid_until`` (the host's
retention period from the time of the PUT; a later PUT of the same chunk
extends it).  Chunks the node added itself (``mu add``) or fetched for
``mu pin`` are pinned and never collected.  ``GarbageCollector`` runs in the
daemon's nursery: every ``period`` seconds it deletes the unpinned chunks
whose paid retention ran out and withdraws our provider records for them;
``mu store gc`` runs the same pass offline (:func:`collect_once`).

Time comes from an injected ``wall_clock`` (unix seconds), so tests move it
forward instead of sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from node.store import GC_BATCH, ChunkStore
from protocol.chunks import Link, RawWalker
from protocol.fetch import dht_key

log = logging.getLogger("mu.retention")

WallClock = Callable[[], float]
# Seconds between two GC passes of a running node (``mu node --gc-period``).
DEFAULT_GC_PERIOD = 600.0


def file_addresses(store: ChunkStore, link: Link) -> list[bytes]:
    """Every chunk address of ``link``'s file (root, manifests, data), walking the local copy.

    Walks the verify cap (the cleartext manifest headers), so a bare root is
    enough and nothing is decrypted.

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


def pin_file(store: ChunkStore, link: Link, now: int | None = None) -> int:
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


def collect_once(store: ChunkStore, now: int, dht: Withdrawer | None = None, *, batch: int = GC_BATCH) -> GcReport:
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

    def __init__(self, store: ChunkStore, *, dht: Withdrawer | None = None, period: float = DEFAULT_GC_PERIOD,
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
