"""The merge's rules one by one (specs/sync.md §Merge, §Tombstones, §Conflict copies, §Moves)."""

from __future__ import annotations

import pytest

from protocol.sync import (
    MAX_PATH_BYTES,
    EntryKind,
    FolderState,
    Move,
    Observation,
    Ordering,
    SyncError,
    VersionVector,
    conflict_name,
    merge,
    record_local_change,
    record_local_changes,
)

A, B, C = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32
T0 = 1_767_225_600_000_000_000  # 2026-01-01 00:00:00 UTC
SECOND = 1_000_000_000


def seen(content: bytes, mtime: int = T0, mode: int = 0o644) -> Observation:
    return Observation(EntryKind.FILE, content, len(content), mtime, mode)


def change(state: FolderState, path: str, observation: Observation | None) -> FolderState:
    return record_local_change(state, path, observation, now_ns=T0 + 100 * SECOND)


def test_vectors_order_versions() -> None:
    one = VersionVector().bump(A)
    assert one.bump(B).compare(one) is Ordering.AFTER
    assert one.compare(one.bump(A)) is Ordering.BEFORE
    assert one.bump(A).compare(one.bump(B)) is Ordering.CONCURRENT
    assert one.bump(B).join(one.bump(A)) == VersionVector.of({A: 2, B: 1})
    assert VersionVector.of({A: 1, B: 0}) == one


def test_a_descendant_replaces_what_it_saw() -> None:
    a = change(FolderState.of(A), "f", seen(b"one"))
    b = merge(FolderState.of(B), a).state
    b = change(b, "f", seen(b"two", T0 - SECOND))  # an older mtime does not matter: it descends
    plan = merge(a, b)
    assert plan.state.get("f") == b.get("f")
    assert [w.path for w in plan.writes] == ["f"] and not plan.conflicts


def test_concurrent_edits_keep_both_the_older_as_a_conflict_copy() -> None:
    a = change(FolderState.of(A), "notes/plan.txt", seen(b"from a", T0))
    b = change(FolderState.of(B), "notes/plan.txt", seen(b"from b", T0 + 61 * SECOND))
    plan = merge(a, b)
    winner = plan.state.get("notes/plan.txt")
    assert winner is not None and winner.content == b"from b"
    assert winner.vector == VersionVector.of({A: 1, B: 1})
    copy = "notes/plan.sync-conflict-20260101-000000-AEAQCAI.txt"
    assert [c.copy_path for c in plan.conflicts] == [copy]
    # Our losing version is on disk already: renamed, not fetched again.
    assert plan.moves == (Move("notes/plan.txt", copy, a.get("notes/plan.txt"), a.get("notes/plan.txt"), None),)  # type: ignore[arg-type]
    assert [(w.path, w.entry.content, w.replaces) for w in plan.writes] == [("notes/plan.txt", b"from b", None)]
    # B reaches the same tree, fetching A's version into the copy.
    other = merge(b, a)
    assert other.state.live() == plan.state.live()
    assert [(w.path, w.entry.content) for w in other.writes] == [(copy, b"from a")]


def test_equal_mtimes_fall_to_the_lower_device_id_losing() -> None:
    a = change(FolderState.of(A), "x", seen(b"a"))
    b = change(FolderState.of(B), "x", seen(b"b"))
    plan = merge(b, a)
    assert plan.state.get("x").content == b"b"  # type: ignore[union-attr]
    assert plan.conflicts[0].entry.device == A


def test_concurrent_equal_content_is_no_conflict() -> None:
    a = change(FolderState.of(A), "x", seen(b"same", T0))
    b = change(FolderState.of(B), "x", seen(b"same", T0 + SECOND, 0o600))
    plan = merge(a, b)
    assert not plan.conflicts and not plan.writes
    assert [m.entry.mode for m in plan.metadata] == [0o600]


def test_a_tombstone_wins_over_what_it_saw() -> None:
    a = change(FolderState.of(A), "x", seen(b"a"))
    b = change(merge(FolderState.of(B), a).state, "x", None)
    plan = merge(a, b)
    assert plan.state.get("x").deleted  # type: ignore[union-attr]
    assert [d.path for d in plan.deletes] == ["x"]


def test_a_tombstone_loses_to_an_edit_it_did_not_see() -> None:
    a = change(FolderState.of(A), "x", seen(b"a"))
    b = change(merge(FolderState.of(B), a).state, "x", None)
    a = change(a, "x", seen(b"edited after", T0 - SECOND))
    for plan in (merge(a, b), merge(b, a)):
        kept = plan.state.get("x")
        assert kept is not None and kept.content == b"edited after" and not plan.conflicts
        assert kept.vector.descends_from(b.get("x").vector)  # type: ignore[union-attr]
    assert [w.path for w in merge(b, a).writes] == ["x"]


def test_an_old_tombstone_does_not_delete_a_newer_version() -> None:
    a = change(change(FolderState.of(A), "x", seen(b"1")), "x", None)
    b = change(merge(FolderState.of(B), a).state, "x", seen(b"2"))
    plan = merge(b, a)
    assert not plan.touches_disk and plan.state.get("x").content == b"2"  # type: ignore[union-attr]


def test_a_rename_is_a_move() -> None:
    a = change(FolderState.of(A), "old/name.bin", seen(b"root-ref"))
    b = merge(FolderState.of(B), a).state
    a = change(change(a, "new.bin", seen(b"root-ref")), "old/name.bin", None)
    plan = merge(b, a)
    assert [(m.source, m.target) for m in plan.moves] == [("old/name.bin", "new.bin")]
    assert not plan.writes and not plan.deletes


def test_a_conflict_name_in_use_gets_a_number() -> None:
    a = change(FolderState.of(A), "x.txt", seen(b"a"))
    b = change(FolderState.of(B), "x.txt", seen(b"b"))
    taken = conflict_name("x.txt", T0, A)
    c = change(FolderState.of(C), taken, seen(b"a user's own file"))
    plan = merge(a, b, c)
    assert [x.copy_path for x in plan.conflicts] == [taken.replace("-AEAQCAI.txt", "-AEAQCAI-2.txt")]
    assert plan.state.get(taken).content == b"a user's own file"  # type: ignore[union-attr]
    assert merge(a, c, b) == plan


@pytest.mark.parametrize(("path", "expected"), [
    ("a/b.tar.gz", "a/b.tar.sync-conflict-20260101-000000-AEAQCAI.gz"),
    (".bashrc", ".bashrc.sync-conflict-20260101-000000-AEAQCAI"),
    ("README", "README.sync-conflict-20260101-000000-AEAQCAI"),
])
def test_conflict_names(path: str, expected: str) -> None:
    assert conflict_name(path, T0 + 999_999_999, A) == expected


def test_a_conflict_name_stays_within_the_path_bound() -> None:
    path = "d/" + "é" * ((MAX_PATH_BYTES - 10) // 2) + ".txt"
    name = conflict_name(path, T0, A)
    assert len(name.encode()) <= MAX_PATH_BYTES and name.endswith("-AEAQCAI.txt") and name.startswith("d/é")


def test_local_changes_bump_the_local_counter_once_per_change() -> None:
    state = change(FolderState.of(A), "x", seen(b"1"))
    assert change(state, "x", seen(b"1")) == state, "seeing the same thing again is no change"
    assert change(state, "x", seen(b"1", mode=0o600)).get("x").vector == VersionVector.of({A: 2})  # type: ignore[union-attr]
    gone = change(state, "x", None)
    assert gone.get("x").deleted and change(gone, "x", None) == gone  # type: ignore[union-attr]
    assert change(FolderState.of(A), "never", None) == FolderState.of(A)


def test_a_swap_of_two_names_never_overwrites_a_move_s_source() -> None:
    a = change(change(FolderState.of(A), "x", seen(b"X")), "y", seen(b"Y"))
    b = merge(FolderState.of(B), a).state
    a = change(change(a, "x", seen(b"Y")), "y", seen(b"X"))
    plan = merge(b, a)
    # Simulate the plan on a dict "disk": moves in order, then writes (fetches).
    disk = {path: entry.content for path, entry in b.live().items()}
    for move in plan.moves:
        assert disk[move.source] == move.replaces.content
        disk[move.target] = disk.pop(move.source)
    for write in plan.writes:
        assert write.replaces is None or disk.get(write.path) == write.replaces.content
        disk[write.path] = write.entry.content
    assert disk == {"x": b"Y", "y": b"X"}
    assert len(plan.moves) == 1 and len(plan.writes) == 1, "one content moves, the cycle's other is fetched"


def test_deletes_go_children_first_and_writes_parents_first() -> None:
    a = FolderState.of(A)
    for path in ("d", "d/e", "d/e/f"):
        kind = EntryKind.FILE if path == "d/e/f" else EntryKind.DIRECTORY
        a = change(a, path, Observation(kind, b"f" if kind is EntryKind.FILE else b"", 0, T0, 0o755))
    plan = merge(FolderState.of(B), a)
    assert [w.path for w in plan.writes] == ["d", "d/e", "d/e/f"]
    b = plan.state
    for path in ("d", "d/e", "d/e/f"):
        a = change(a, path, None)
    assert [d.path for d in merge(b, a).deletes] == ["d/e/f", "d/e", "d"]


def test_a_batch_of_local_changes_is_the_changes_one_by_one() -> None:
    state = change(FolderState.of(A), "x", seen(b"1"))
    batch = [("x", seen(b"2")), ("y", seen(b"3")), ("x", None), ("z", None)]
    one_by_one = state
    for path, observation in batch:
        one_by_one = change(one_by_one, path, observation)
    assert record_local_changes(state, batch, now_ns=T0 + 100 * SECOND) == one_by_one
    assert one_by_one.get("x").vector == VersionVector.of({A: 3}) and one_by_one.get("z") is None  # type: ignore[union-attr]


def test_a_state_built_to_exhaust_the_conflict_names_is_refused() -> None:
    a = change(FolderState.of(A), "x", seen(b"a"))
    b = change(FolderState.of(B), "x", seen(b"b"))
    squatter = record_local_changes(
        FolderState.of(C),
        [(conflict_name("x", T0, A, attempt), seen(b"squat %d" % attempt)) for attempt in range(1, 1001)],
        now_ns=T0)
    with pytest.raises(SyncError, match="no free conflict name"):
        merge(a, b, squatter)
