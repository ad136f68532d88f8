"""Version vectors: which changes of each device a file's version has seen (specs/sync.md §Version vectors).

The anchor is Syncthing's Block Exchange Protocol: every device of a folder
keeps, per file, one counter per device; a device that changes the file
raises its own counter above everything it has seen.  Comparing two vectors
says whether one version descends from the other (it may replace it) or
whether the two were made without seeing each other (a conflict).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

# A device id is the device's public key (32 bytes); any shorter id is not
# accepted on the wire (specs/sync.md §Definitions and defaults).
DEVICE_ID_SIZE = 32
# Most devices one vector may name: bounds the decoder's work per entry.
MAX_VECTOR_DEVICES = 256
# Counters are unsigned 64-bit integers on the wire.
MAX_COUNTER = 2**64 - 1


class SyncError(ValueError):
    """A sync state, entry or vector breaks the rules of specs/sync.md."""


class Ordering(Enum):
    """How two versions of one file relate (specs/sync.md §Version vectors)."""

    EQUAL = "equal"
    BEFORE = "before"  # the left one is an ancestor of the right one
    AFTER = "after"  # the left one descends from the right one
    CONCURRENT = "concurrent"  # made without seeing each other: a conflict


def check_device(device: bytes) -> bytes:
    """Return ``device`` if it is a well-formed device id; SyncError otherwise."""
    if not isinstance(device, bytes) or len(device) != DEVICE_ID_SIZE:
        raise SyncError(f"a device id is {DEVICE_ID_SIZE} bytes")
    return device


@dataclass(frozen=True, slots=True)
class VersionVector:
    """Counters per device, sorted by device id, zeros left out (so equal vectors are equal tuples)."""

    counters: tuple[tuple[bytes, int], ...] = ()

    def __post_init__(self) -> None:
        if len(self.counters) > MAX_VECTOR_DEVICES:
            raise SyncError(f"a version vector names at most {MAX_VECTOR_DEVICES} devices")
        previous = b""
        for device, counter in self.counters:
            check_device(device)
            if device <= previous:
                raise SyncError("a version vector's devices are sorted and distinct")
            if type(counter) is not int or not 0 < counter <= MAX_COUNTER:
                raise SyncError(f"a version vector's counters are in [1, {MAX_COUNTER}]")
            previous = device

    @classmethod
    def of(cls, counters: Mapping[bytes, int]) -> VersionVector:
        """The vector with these counters (zero counters are dropped)."""
        return cls(tuple(sorted((device, counter) for device, counter in counters.items() if counter)))

    def as_dict(self) -> dict[bytes, int]:
        return dict(self.counters)

    def get(self, device: bytes) -> int:
        for known, counter in self.counters:
            if known == device:
                return counter
        return 0

    def bump(self, device: bytes) -> VersionVector:
        """This vector with ``device``'s counter one higher: a change made by ``device`` on top of it."""
        counters = self.as_dict()
        counters[check_device(device)] = counters.get(device, 0) + 1
        if counters[device] > MAX_COUNTER:
            raise SyncError("a version vector counter would overflow")
        return VersionVector.of(counters)

    def join(self, other: VersionVector) -> VersionVector:
        """The least vector that has seen both: each device's higher counter."""
        counters = self.as_dict()
        for device, counter in other.counters:
            counters[device] = max(counters.get(device, 0), counter)
        return VersionVector.of(counters)

    def compare(self, other: VersionVector) -> Ordering:
        """How this version relates to ``other``."""
        mine, theirs = self.as_dict(), other.as_dict()
        less = greater = False
        for device in mine.keys() | theirs.keys():
            a, b = mine.get(device, 0), theirs.get(device, 0)
            less |= a < b
            greater |= a > b
        if less and greater:
            return Ordering.CONCURRENT
        if less:
            return Ordering.BEFORE
        if greater:
            return Ordering.AFTER
        return Ordering.EQUAL

    def descends_from(self, other: VersionVector) -> bool:
        """True if this version has seen everything ``other`` has (equal included)."""
        return self.compare(other) in (Ordering.AFTER, Ordering.EQUAL)


def join_all(vectors: Iterable[VersionVector]) -> VersionVector:
    """The join of every vector given (the empty vector for none)."""
    result = VersionVector()
    for vector in vectors:
        result = result.join(vector)
    return result
