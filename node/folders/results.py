"""What the folder commands report, from either backend (specs/folders.md §12 Commands).

Frozen dataclasses with a JSON form, so the running node's control API
(node/folders/network.py) and the CLI's remote backend agree on one shape.
Paths are shown with ``os.fsdecode`` (undecodable bytes as surrogate escapes).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, TypeVar

Json = dict[str, Any]
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotReport:
    """``mu folder snapshot``: the new snapshot, what the scan read, what went to the network."""

    number: int
    seq: int  # the folder record's sequence number now
    time_ns: int
    files: int
    dirs: int
    symlinks: int
    size: int
    files_read: int
    bytes_read: int
    new_chunks: int  # chunks the local store did not hold before
    skipped: int
    added: int
    removed: int
    changed: int
    chunks_uploaded: int = 0  # chunks of the snapshot (files, manifest, record) PUT to hosts (paid through a node)
    list_chunks_uploaded: int = 0  # chunks of its chunk list PUT to hosts (specs/folders.md §7.1)
    chunks_already_sent: int = 0  # chunks not PUT: sent by an earlier snapshot or run
    under_replicated: int = 0
    published_to: int | None = None  # DHT nodes that took the record (None: no node, recorded locally)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """One line of ``mu folder log``."""

    number: int
    time_ns: int
    files: int
    dirs: int
    symlinks: int
    size: int
    added: int
    removed: int
    changed: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RestoreReport:
    """``mu folder restore``: which snapshot, and what was written."""

    number: int
    time_ns: int
    files: int
    dirs: int
    symlinks: int
    size: int
    already: int  # files found restored already


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """``mu folder prune``: what the policy keeps, what it prunes, what that releases."""

    kept: int  # snapshots kept
    pruned: int  # snapshots pruned, now and before
    newly_pruned: int  # snapshots pruned by this run
    chunks_released: int  # chunks no kept snapshot needs: unpinned, no longer paid for
    bytes_released: int
    dry_run: bool = False


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DiffReport:
    """``mu folder diff``: paths added, removed and changed from snapshot ``a`` to ``b``."""

    a: int
    b: int
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]


class FileCounter:
    """Counts files and bytes read or written; reports the totals at most every ``every_s`` seconds.

    Both backends turn a folder operation's per-file callback into progress
    with it, so a tree of 10,000 small files does not make 10,000 events.
    """

    def __init__(self, report: Callable[[int, int], None], *, every_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.report = report
        self.every_s = every_s
        self.clock = clock
        self.files = 0
        self.bytes = 0
        self._last = clock()

    def __call__(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self.report(self.files, self.bytes)


def to_json(result: object) -> Json:
    assert dataclasses.is_dataclass(result) and not isinstance(result, type)
    return dataclasses.asdict(result)


def from_json(cls: type[T], data: Json) -> T:
    """Build ``cls`` from its JSON form; lists become tuples, unknown keys are refused."""
    assert dataclasses.is_dataclass(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(data, dict) or not set(data) <= names:
        raise ValueError(f"not a {cls.__name__}: {sorted(set(data) - names) if isinstance(data, dict) else data}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
