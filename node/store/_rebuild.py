"""Rebuilding the chunk store's index from its files (specs/chunks.md §8.6).

The files are the truth, so after an unclean stop (the index's dirty flag)
or on demand the index is made to match them, and temp files left by
crashed writers are removed.  ``ChunkStore`` owns one :class:`IndexRebuilder`
and hands it the index, the quota account and the dirty flag it repairs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.chunks import ADDRESS_SIZE

from ._index import ChunkIndex
from ._writer import TMP_DIR, DirtyFlag, StoreSpace

log = logging.getLogger("mu.store")

# Temp files older than this are leftovers of a crash and may be removed;
# younger ones may belong to a writer in another process.
STALE_TEMP_SECONDS = 3600
# Retention given to chunks a rebuild finds without an index row: their
# paid-until time and pin are unknown, so they are kept this long before
# the GC may take them (specs/chunks.md §8.6).
RECOVERED_GRACE_SECONDS = 30 * 86_400


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What ``ChunkStore.rebuild_index`` found and changed."""

    chunks: int
    bytes: int
    added: int
    removed: int
    temp_files_removed: int
    recovered: int = 0  # rows added with a grace retention (metadata unknown)


class IndexRebuilder:
    """Index rebuild and crash leftovers for the store at ``root`` (see the module docstring)."""

    def __init__(self, root: Path, index: ChunkIndex, space: StoreSpace, dirty: DirtyFlag) -> None:
        self.root = root
        self._tmp = root / TMP_DIR
        self._index = index
        self._space = space
        self._dirty = dirty

    def scan_files(self) -> dict[bytes, int]:
        """Every chunk file on disk: address -> size. Ignores foreign names."""
        found: dict[bytes, int] = {}
        for shard in os.scandir(self.root):
            if not shard.is_dir() or len(shard.name) != 2 or shard.name == TMP_DIR:
                continue
            for entry in os.scandir(shard.path):
                name = entry.name
                if len(name) != 2 * ADDRESS_SIZE or not name.startswith(shard.name) or not entry.is_file():
                    continue
                try:
                    address = bytes.fromhex(name)
                except ValueError:
                    continue
                if address.hex() == name:
                    found[address] = entry.stat().st_size
        return found

    def remove_stale_temp_files(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Delete temp files left by crashed writers; return how many."""
        removed = 0
        cutoff = time.time() - max_age
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat().st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def rebuild(self, *, temp_max_age: float = STALE_TEMP_SECONDS, now: int | None = None,
                      grace_seconds: int = RECOVERED_GRACE_SECONDS) -> RebuildReport:
        """Make the index match the chunk files exactly (the files are the truth).

        Retention metadata is not in the files: rows that stay keep theirs,
        and chunks found without a row get ``paid_until = now +
        grace_seconds`` (never collected before that), unpinned.  Pins live
        only in the index (written durably); if the index itself was lost,
        its pins are gone, and this is logged: the grace retention leaves
        the operator time to pin again (specs/chunks.md §8.6).
        """
        now = int(time.time()) if now is None else now
        temp_removed = self.remove_stale_temp_files(temp_max_age)
        on_disk = self.scan_files()
        added, removed = self._index.reconcile(on_disk, now, now + grace_seconds)
        total = sum(on_disk.values())
        self._space.reset(total)
        self._dirty.restore()
        if added:
            log.warning("index rebuild: %d chunk files had no index row; kept unpinned with a grace retention "
                        "until %d", added, now + grace_seconds)
        return RebuildReport(len(on_disk), total, added, removed, temp_removed, recovered=added)
