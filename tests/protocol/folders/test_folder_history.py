"""Diff between snapshots and the retention policy (specs/folders.md §8, §9)."""

from __future__ import annotations

from protocol.chunks import Link
from protocol.folders import KEEP_ALL_DAYS, KEEP_DAILY_DAYS, Entry, EntryKind, diff, retained, retained_numbers
from protocol.folders._history import NS_PER_DAY

HOUR = NS_PER_DAY // 24


def file(path: bytes, size: int, mtime: int = 0) -> Entry:
    return Entry(path=path, kind=EntryKind.FILE, mode=0o644, mtime_ns=mtime, size=size,
                 link=Link(bytes([size]) * 32, bytes(32)))


def test_diff_names_added_removed_and_changed_paths() -> None:
    a = [file(b"same", 1), file(b"gone", 2), file(b"edited", 3), file(b"touched", 4)]
    b = [file(b"same", 1), file(b"new", 5), file(b"edited", 6), file(b"touched", 4, mtime=1)]
    changes = diff(a, b)
    assert changes.added == (b"new",) and changes.removed == (b"gone",)
    assert changes.changed == (b"edited", b"touched")
    assert diff(a, a) == diff(b, b) == diff([], []) == type(changes)((), (), ())


def test_retention_keeps_everything_for_30_days() -> None:
    now = 400 * NS_PER_DAY
    recent = [now - k * HOUR for k in range(0, 24 * KEEP_ALL_DAYS, 5)]
    assert retained(recent, now) == frozenset(recent)


def test_retention_keeps_the_newest_of_each_day_up_to_six_months() -> None:
    now = 400 * NS_PER_DAY
    day = now // NS_PER_DAY - 40  # a day 40 days ago: in the daily band
    same_day = [day * NS_PER_DAY + h * HOUR for h in (1, 5, 23)]
    kept = retained(same_day, now)
    assert kept == {same_day[-1]}


def test_retention_drops_what_is_older_than_six_months_but_the_latest() -> None:
    now = 1000 * NS_PER_DAY
    old = [now - (KEEP_DAILY_DAYS + k) * NS_PER_DAY for k in (1, 2, 3)]
    assert retained(old, now) == {max(old)}  # the folder's last state always stays
    assert retained(old + [now], now) == {now}
    assert retained([], now) == frozenset()


def test_retention_bands_meet_without_gap() -> None:
    now = 1000 * NS_PER_DAY
    edge = now - KEEP_ALL_DAYS * NS_PER_DAY  # exactly 30 days: now the daily band
    times = [edge - HOUR, edge, edge + 1, now]
    kept = retained(times, now)
    assert edge + 1 in kept and now in kept
    assert (edge in kept) != (edge - HOUR in kept) or (edge // NS_PER_DAY != (edge - HOUR) // NS_PER_DAY)


def test_retained_numbers_measure_ages_from_the_newest_snapshot() -> None:
    start = 1000 * NS_PER_DAY
    # One snapshot at 01:00 and one at 13:00 of each of 300 days, numbered in order.
    times = {2 * d + k + 1: start + d * NS_PER_DAY + (1 + 12 * k) * HOUR for d in range(300) for k in (0, 1)}
    kept = retained_numbers(times)
    newest = times[600]
    assert kept == {n for n, t in times.items() if t in retained(times.values(), newest)}
    assert {599, 600} <= kept and 1 not in kept and 2 not in kept
    day_100 = {n for n in kept if (times[n] - start) // NS_PER_DAY == 200}  # 99 days before the newest
    assert day_100 == {402}  # the later of the two
    # No wall clock: the same chain gives the same set whenever it is read.
    assert retained_numbers(dict(times)) == kept
    # The newest snapshot is kept even when an older one carries a later time (a clock set back).
    assert 3 in retained_numbers({1: 5 * NS_PER_DAY, 2: 9 * NS_PER_DAY, 3: 0})
    assert retained_numbers({}) == frozenset()
