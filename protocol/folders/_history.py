"""What changed between two snapshots, and which snapshots to keep (specs/folders.md §8, §9).

Both are pure functions of values: the caller decodes the manifests and
passes the clock's ``now`` in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._manifest import Entry

NS_PER_DAY = 86_400 * 10**9
# specs/folders.md §9 Retention policy: every snapshot of the last KEEP_ALL_DAYS days, then the
# newest of each UTC day up to KEEP_DAILY_DAYS days old (six months), nothing older but the latest.
KEEP_ALL_DAYS = 30
KEEP_DAILY_DAYS = 183


@dataclass(frozen=True, slots=True)
class Changes:
    """Paths added, removed and changed (kind, content, size, mode or mtime) from ``a`` to ``b``."""

    added: tuple[bytes, ...]
    removed: tuple[bytes, ...]
    changed: tuple[bytes, ...]


def diff(a: Iterable[Entry], b: Iterable[Entry]) -> Changes:
    """The changes that turn the tree ``a`` into the tree ``b``, each list in path order."""
    old = {e.path: e for e in a}
    new = {e.path: e for e in b}
    return Changes(added=tuple(sorted(new.keys() - old.keys())),
                   removed=tuple(sorted(old.keys() - new.keys())),
                   changed=tuple(sorted(p for p in old.keys() & new.keys() if old[p] != new[p])))


def retained(times_ns: Iterable[int], now_ns: int, *, keep_all_days: int = KEEP_ALL_DAYS,
             keep_daily_days: int = KEEP_DAILY_DAYS) -> frozenset[int]:
    """The snapshot times a folder keeps at ``now_ns`` (§9 Retention policy).

    Every snapshot younger than ``keep_all_days``; of older ones younger than
    ``keep_daily_days``, the newest of each UTC day; always the newest
    snapshot of all, so a folder never loses its last state.
    """
    times = sorted(set(times_ns))
    if not times:
        return frozenset()
    kept = {times[-1]}
    newest_of_day: dict[int, int] = {}
    for t in times:
        age = now_ns - t
        if age < keep_all_days * NS_PER_DAY:
            kept.add(t)
        elif age < keep_daily_days * NS_PER_DAY:
            newest_of_day[t // NS_PER_DAY] = t  # ascending order: the last one seen is the newest
    kept.update(newest_of_day.values())
    return frozenset(kept)


def retained_numbers(times_by_number: Mapping[int, int], *, keep_all_days: int = KEEP_ALL_DAYS,
                     keep_daily_days: int = KEEP_DAILY_DAYS) -> frozenset[int]:
    """The snapshot numbers a folder keeps, ages measured from its newest snapshot (§9 Retention policy).

    ``now`` is the time of the highest-numbered snapshot, not a wall clock:
    every reader of one chain of records computes the same kept set, and a
    folder nobody snapshots keeps the history it has.
    """
    if not times_by_number:
        return frozenset()
    now_ns = times_by_number[max(times_by_number)]
    kept = retained(times_by_number.values(), now_ns, keep_all_days=keep_all_days,
                    keep_daily_days=keep_daily_days)
    return frozenset(n for n, t in times_by_number.items() if t in kept) | {max(times_by_number)}
