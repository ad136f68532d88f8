"""The merge: one device's state and the states of others in, one plan out (specs/sync.md §Merge).

Facts from Syncthing's Block Exchange Protocol: a version that descends from
another replaces it; versions made without seeing each other conflict, and
both are kept, the loser under a ``.sync-conflict-`` name; a delete is a
version like any other, so it wins only over what it saw.  Two concurrent
versions with the same content are no conflict.

The result at each path depends only on the set of versions the inputs
hold, never on their order, so devices that have seen the same versions
hold the same tree (the convergence property in tests/protocol/sync/).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from .state import MAX_PATH_BYTES, EntryKind, FileEntry, FolderState
from .vector import Ordering, SyncError, join_all

CONFLICT_MARKER = ".sync-conflict-"
# Characters of the device id's base32 form in a conflict name, as
# Syncthing's short device id.
CONFLICT_DEVICE_CHARS = 7
# Most numbered names tried for one conflict copy before the merge gives up
# (specs/sync.md §Conflict copies); more would mean a hostile state.
MAX_CONFLICT_ATTEMPTS = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class Write:
    """Make ``path`` hold ``entry`` (fetch a file, make a directory or symlink).

    ``replaces`` is the local entry the plan saw there (None: nothing); the
    node writes only if the disk still matches it.
    """

    path: str
    entry: FileEntry
    replaces: FileEntry | None


@dataclass(frozen=True, slots=True)
class Move:
    """Rename the local ``source`` to ``target``: the content is here already, nothing to fetch.

    ``replaces`` is what the plan saw at ``source``, ``overwrites`` what it
    saw at ``target`` (None: nothing live there).
    """

    source: str
    target: str
    entry: FileEntry
    replaces: FileEntry
    overwrites: FileEntry | None


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove the local ``path``, which the plan saw as ``replaces``."""

    path: str
    replaces: FileEntry


@dataclass(frozen=True, slots=True)
class SetMetadata:
    """Same content, new mode or mtime: change them in place."""

    path: str
    entry: FileEntry
    replaces: FileEntry


@dataclass(frozen=True, slots=True)
class ConflictCopy:
    """The version ``entry`` of ``path`` lost a conflict and lives on as ``copy_path``."""

    path: str
    copy_path: str
    entry: FileEntry


@dataclass(frozen=True, slots=True)
class MergePlan:
    """What the local device does to reach ``state``, the merged state it then holds.

    Apply order (specs/sync.md §The plan): the moves in their order (no move
    overwrites the source of a later one), the writes (parents first),
    metadata, then the deletes (children first).
    """

    state: FolderState
    moves: tuple[Move, ...]
    writes: tuple[Write, ...]
    metadata: tuple[SetMetadata, ...]
    deletes: tuple[Delete, ...]
    conflicts: tuple[ConflictCopy, ...]
    kept: tuple[str, ...]

    @property
    def touches_disk(self) -> bool:
        return bool(self.moves or self.writes or self.metadata or self.deletes)


def _order(entry: FileEntry) -> tuple[int, bytes, str, bytes, int, int]:
    """The total order all devices agree on: the greater version wins a conflict (newer mtime, then higher device id)."""
    return (entry.mtime_ns, entry.device, entry.kind.value, entry.content, entry.mode, entry.size)


def resolve(versions: Sequence[FileEntry]) -> tuple[FileEntry, list[FileEntry]]:
    """The version a path ends with, and the versions that lost a conflict, greatest first.

    Versions that another one descends from drop out.  The rest (the heads) with
    equal content fold into one; if more than one content is left, a live
    one beats every tombstone and the greatest live one by ``_order`` wins.
    The winner's vector is the join of all heads, so it descends from
    every version it replaced and the same inputs give the same result.
    """
    heads = [v for v in versions if not any(v.vector.compare(o.vector) is Ordering.BEFORE for o in versions)]
    groups: dict[tuple[EntryKind, bytes], list[FileEntry]] = {}
    for head in heads:
        groups.setdefault((head.kind, head.content), []).append(head)
    folded = [replace(max(group, key=_order), vector=join_all(h.vector for h in group)) for group in groups.values()]
    if len(folded) == 1:
        return folded[0], []
    vector = join_all(h.vector for h in heads)
    live = sorted((f for f in folded if not f.deleted), key=_order, reverse=True)
    return replace(live[0], vector=vector), live[1:]


def conflict_name(path: str, mtime_ns: int, device: bytes, attempt: int = 1) -> str:
    """``NAME.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.EXT`` for a losing version of ``path``.

    The time is the loser's mtime in UTC, DEVICE the first characters of
    its maker's id in base32; ``attempt`` > 1 adds ``-N`` after DEVICE when
    the plain name is taken (specs/sync.md §Conflict copies).
    """
    directory, _, base = path.rpartition("/")
    dot = base.rfind(".")
    stem, ext = (base[:dot], base[dot:]) if dot > 0 else (base, "")
    when = (_EPOCH + timedelta(microseconds=mtime_ns // 1000)).strftime("%Y%m%d-%H%M%S")
    short = base64.b32encode(device).decode()[:CONFLICT_DEVICE_CHARS]
    suffix = f"{CONFLICT_MARKER}{when}-{short}" + (f"-{attempt}" if attempt > 1 else "") + ext
    prefix = f"{directory}/" if directory else ""
    room = MAX_PATH_BYTES - len((prefix + suffix).encode())
    # A stem too long for the suffix is cut on a character boundary, so the
    # copy's path stays within the format's bound.
    stem = stem.encode()[:max(room, 1)].decode("utf-8", "ignore") or "_"
    return prefix + stem + suffix


def _copy_path(path: str, loser: FileEntry, result: dict[str, FileEntry]) -> str:
    """The first conflict name for ``loser`` not held by a different live version."""
    for attempt in range(1, MAX_CONFLICT_ATTEMPTS + 1):
        name = conflict_name(path, loser.mtime_ns, loser.device, attempt)
        taken = result.get(name)
        if taken is None or taken.deleted or taken.same_content(loser):
            return name
    # Only a state built to collide (a thousand copies of one name) gets here.
    raise SyncError(f"no free conflict name for {path!r} after {MAX_CONFLICT_ATTEMPTS} attempts")


def merge(local: FolderState, *remotes: FolderState) -> MergePlan:
    """Merge the states of other devices of the folder into ``local``'s; pure and deterministic.

    Returns the plan that takes the local tree to the merged one.  Merging
    the same remotes again gives an empty plan; the order of ``remotes``
    does not matter.  Raises SyncError only for states built to exhaust the
    conflict names of one path (``MAX_CONFLICT_ATTEMPTS``).
    """
    states = (local, *remotes)
    result: dict[str, FileEntry] = {}
    losers: list[tuple[str, FileEntry]] = []
    for path in sorted({path for state in states for path in state}):
        winner, lost = resolve([entry for state in states if (entry := state.get(path)) is not None])
        result[path] = winner
        losers.extend((path, entry) for entry in lost)
    conflicts = []
    for path, loser in losers:
        name = _copy_path(path, loser, result)
        existing = result.get(name)
        result[name] = resolve([existing, loser])[0] if existing is not None else loser
        if result[name].same_content(loser):
            conflicts.append(ConflictCopy(path, name, loser))
    return _plan(local, FolderState.of(local.device, result), conflicts, remotes)


def _plan(local: FolderState, merged: FolderState, conflicts: Iterable[ConflictCopy],
          remotes: Sequence[FolderState]) -> MergePlan:
    writes: list[Write] = []
    metadata: list[SetMetadata] = []
    leaving: dict[str, FileEntry] = {}  # local live versions the merged tree no longer holds at their path
    kept = []
    for path, new in merged.items():
        old = local.get(path)
        old_live = old is not None and not old.deleted
        if old is not None and old_live and not (not new.deleted and old.same_content(new)):
            leaving[path] = old
        if new.deleted:
            continue
        if old is not None and old_live and old.same_content(new):
            if (old.mode, old.mtime_ns) != (new.mode, new.mtime_ns):
                metadata.append(SetMetadata(path, new, old))
            elif any((theirs := r.get(path)) is not None and not theirs.same_observation(old) for r in remotes):
                kept.append(path)
        else:
            writes.append(Write(path, new, old if old_live else None))
    moves: list[Move] = []
    sources = dict(leaving)
    for write in list(writes):
        if write.entry.kind not in (EntryKind.FILE, EntryKind.SYMLINK):
            continue
        source = next((p for p, e in sources.items() if e.same_content(write.entry)), None)
        if source is not None:
            moves.append(Move(source, write.path, write.entry, sources.pop(source), write.replaces))
            writes.remove(write)
    moves, fetched = _order_moves(moves)
    writes.extend(fetched)
    moved = {move.source for move in moves}
    # A path whose version moved away (earlier, in this order) is empty when
    # its new version arrives.
    moves = [replace(move, overwrites=None) if move.target in moved else move for move in moves]
    writes = sorted((replace(write, replaces=None) if write.path in moved else write for write in writes),
                    key=lambda write: write.path)
    # Deepest first: a directory's children go before the directory.
    deletes = [Delete(path, old) for path, old in sorted(leaving.items(), reverse=True)
               if path not in moved and (final := merged.get(path)) is not None and final.deleted]
    return MergePlan(state=merged, moves=tuple(moves), writes=tuple(writes), metadata=tuple(metadata),
                     deletes=tuple(deletes), conflicts=tuple(conflicts), kept=tuple(kept))


def _order_moves(moves: list[Move]) -> tuple[list[Move], list[Write]]:
    """The moves in an order where none overwrites the source of a later one.

    A cycle (two files swapping names) has no such order: one of its moves
    becomes a fetch (a ``Write``, applied after the moves), which breaks it.
    """
    remaining = list(moves)
    ordered: list[Move] = []
    fetched: list[Write] = []
    while remaining:
        sources = {move.source for move in remaining}
        ready = next((move for move in remaining if move.target not in sources), None)
        if ready is not None:
            ordered.append(ready)
            remaining.remove(ready)
        else:
            broken = remaining.pop(0)
            fetched.append(Write(broken.target, broken.entry, None))
    return ordered, fetched
