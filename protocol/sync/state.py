"""A device's view of a synced folder: one entry per path (specs/sync.md §State format).

A ``FolderState`` is what a device publishes (inside its encrypted snapshot)
and what the merge reads.  Its encoding is canonical msgpack: one state has
exactly one encoding, so two devices that agree hold the same bytes and a
decoder can refuse anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

import msgpack

from .vector import MAX_COUNTER, MAX_VECTOR_DEVICES, SyncError, VersionVector, check_device

STATE_VERSION = 1
# Bounds of the format (specs/sync.md §Definitions and defaults): what a decoder accepts
# before it allocates for more.
MAX_PATH_BYTES = 4096
MAX_CONTENT_BYTES = 1024
MAX_ENTRIES = 1_000_000
MAX_STATE_BYTES = 256 * 1024 * 1024
MAX_MODE = 0o7777
MAX_SIZE = 2**64 - 1
MAX_MTIME_NS = 2**63 - 1


class EntryKind(StrEnum):
    """What a path holds; ``DELETED`` is a tombstone (specs/sync.md §Tombstones)."""

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"
    DELETED = "deleted"


def check_path(path: str) -> str:
    """Return ``path`` if it is a relative, normalised, '/'-separated path inside the folder."""
    if not isinstance(path, str) or not path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise SyncError(f"a path is 1 to {MAX_PATH_BYTES} bytes")
    if "\0" in path or "\\" in path or any(part in ("", ".", "..") for part in path.split("/")):
        raise SyncError(f"path {path!r} is not a normalised relative path")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise SyncError(f"path {path!r} is not valid UTF-8") from None
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One version of one path: its vector, what it holds and the device that made it.

    ``content`` is opaque to sync: a file's root reference, a symlink's
    target, empty for a directory or a tombstone.  A tombstone has size 0
    and mode 0; its ``mtime_ns`` is when the delete was seen.
    """

    vector: VersionVector
    kind: EntryKind
    content: bytes
    size: int
    mtime_ns: int
    mode: int
    device: bytes

    def __post_init__(self) -> None:
        check_device(self.device)
        if not isinstance(self.content, bytes) or len(self.content) > MAX_CONTENT_BYTES:
            raise SyncError(f"an entry's content reference is at most {MAX_CONTENT_BYTES} bytes")
        for name, value, bound in (("size", self.size, MAX_SIZE), ("mtime_ns", self.mtime_ns, MAX_MTIME_NS),
                                   ("mode", self.mode, MAX_MODE)):
            if type(value) is not int or not 0 <= value <= bound:
                raise SyncError(f"an entry's {name} is an integer in [0, {bound}]")
        if self.kind in (EntryKind.DIRECTORY, EntryKind.DELETED) and self.content:
            raise SyncError(f"a {self.kind} entry has no content")
        if self.kind is EntryKind.DELETED and (self.size or self.mode):
            raise SyncError("a tombstone has size 0 and mode 0")
        if self.vector.get(self.device) == 0:
            raise SyncError("an entry's vector counts a change by the device that made it")

    @property
    def deleted(self) -> bool:
        return self.kind is EntryKind.DELETED

    def same_content(self, other: FileEntry) -> bool:
        """Same kind and content: two such versions are no conflict, whatever their vectors."""
        return self.kind == other.kind and self.content == other.content

    def same_observation(self, other: FileEntry) -> bool:
        """Same everything but the vector: what a scan compares."""
        return replace(other, vector=self.vector, device=self.device) == self


@dataclass(frozen=True, slots=True)
class Observation:
    """What a scan saw at a path: the entry's fields without vector or device."""

    kind: EntryKind
    content: bytes
    size: int
    mtime_ns: int
    mode: int


@dataclass(frozen=True, slots=True)
class FolderState:
    """One device's entries, by path.  Build with ``FolderState.of``; never mutated."""

    device: bytes
    _entries: Mapping[str, FileEntry] = field(repr=False)

    @classmethod
    def of(cls, device: bytes, entries: Mapping[str, FileEntry] | None = None) -> FolderState:
        entries = dict(entries or {})
        if len(entries) > MAX_ENTRIES:
            raise SyncError(f"a state holds at most {MAX_ENTRIES} entries")
        for path in entries:
            check_path(path)
        return cls(check_device(device), dict(sorted(entries.items())))

    def get(self, path: str) -> FileEntry | None:
        return self._entries.get(path)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[str, FileEntry]]:
        return iter(self._entries.items())

    def live(self) -> dict[str, FileEntry]:
        """The entries that are not tombstones: the tree this state describes."""
        return {path: entry for path, entry in self._entries.items() if not entry.deleted}

    def with_entry(self, path: str, entry: FileEntry) -> FolderState:
        entries = dict(self._entries)
        entries[check_path(path)] = entry
        return FolderState.of(self.device, entries)

    def serialize(self) -> bytes:
        """The canonical msgpack encoding (specs/sync.md §State format)."""
        rows = [
            [path, [[device, counter] for device, counter in entry.vector.counters], entry.kind.value,
             entry.content, entry.size, entry.mtime_ns, entry.mode, entry.device]
            for path, entry in self._entries.items()
        ]
        packed = msgpack.packb([STATE_VERSION, self.device, rows], use_bin_type=True)
        assert isinstance(packed, bytes)  # packb without a stream always returns bytes
        return packed

    @classmethod
    def parse(cls, data: bytes) -> FolderState:
        """Decode a state; SyncError on anything but the canonical encoding of a valid state."""
        if len(data) > MAX_STATE_BYTES:
            raise SyncError(f"a state is at most {MAX_STATE_BYTES} bytes")
        try:
            # Limits are set before decoding (STYLE.md rule 4): no array, map
            # or string may claim more than the format allows.
            decoded = msgpack.unpackb(
                data, raw=False, strict_map_key=True, max_bin_len=max(MAX_CONTENT_BYTES, 32),
                max_str_len=MAX_PATH_BYTES, max_array_len=max(MAX_ENTRIES, MAX_VECTOR_DEVICES),
                max_map_len=0, max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises several unrelated types
            raise SyncError(f"a state is not valid msgpack: {exc}") from None
        if not isinstance(decoded, list) or len(decoded) != 3 or decoded[0] != STATE_VERSION:
            raise SyncError("a state is [version 1, device, entries]")
        _, device, rows = decoded
        if not isinstance(device, bytes) or not isinstance(rows, list):
            raise SyncError("a state is [version 1, device, entries]")
        entries: dict[str, FileEntry] = {}
        for row in rows:
            path, entry = _parse_row(row)
            entries[path] = entry
        state = cls.of(device, entries)
        if state.serialize() != data:
            raise SyncError("a state is not in canonical form (sorted, unique paths, shortest integers)")
        return state


def _parse_row(row: object) -> tuple[str, FileEntry]:
    if not isinstance(row, list) or len(row) != 8:
        raise SyncError("an entry is [path, vector, kind, content, size, mtime_ns, mode, device]")
    path, vector, kind, content, size, mtime_ns, mode, device = row
    if not isinstance(vector, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], bytes) for pair in vector
    ):
        raise SyncError("a vector is a list of [device, counter] pairs")
    try:
        entry_kind = EntryKind(kind)
    except ValueError:
        raise SyncError(f"unknown entry kind {kind!r}") from None
    return check_path(path), FileEntry(
        vector=VersionVector(tuple((pair[0], pair[1]) for pair in vector)),
        kind=entry_kind, content=content, size=size, mtime_ns=mtime_ns, mode=mode, device=device,
    )


def record_local_change(state: FolderState, path: str, seen: Observation | None, *, now_ns: int) -> FolderState:
    """The state after the local device saw ``path`` become ``seen`` (None: gone).

    A change bumps the local device's counter over the path's current vector
    (specs/sync.md §Local changes), so it descends from every version this
    device had merged.  Seeing what the state already says changes nothing;
    a vanished path becomes a tombstone stamped ``now_ns``.
    """
    return record_local_changes(state, [(path, seen)], now_ns=now_ns)


def record_local_changes(state: FolderState, changes: Iterable[tuple[str, Observation | None]], *,
                         now_ns: int) -> FolderState:
    """``record_local_change`` for a batch (one scan's changes), building the new state once."""
    entries = dict(state.items())
    for path, seen in changes:
        current = entries.get(check_path(path))
        if seen is None:
            if current is None or current.deleted:
                continue
            seen = Observation(EntryKind.DELETED, b"", 0, max(0, now_ns), 0)
        elif seen.kind is EntryKind.DELETED:
            raise SyncError("a scan observes a file, directory or symlink, or nothing")
        vector = current.vector if current is not None else VersionVector()
        candidate = FileEntry(vector=vector.bump(state.device), kind=seen.kind, content=seen.content,
                              size=seen.size, mtime_ns=seen.mtime_ns, mode=seen.mode, device=state.device)
        if current is None or not current.same_observation(candidate):
            entries[path] = candidate
    return FolderState.of(state.device, entries)
