"""Property tests of the merge (specs/sync.md §Merge): devices edit, delete and rename, and exchange states.

A simulated device is its ``FolderState``; its tree is the state's live
entries.  Every edit writes a content never written before, so a content
names the version that made it, and the test knows which versions a user
replaced on purpose (an edit or delete of the path that showed them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.sync import (
    CONFLICT_MARKER,
    EntryKind,
    FolderState,
    Observation,
    Ordering,
    merge,
    record_local_change,
)

PATHS = ("a.txt", "b", "dir/c.md")
DEVICES = (bytes([7]) * 32, bytes([200]) * 32, bytes([9]) + bytes(31))
# Few distinct mtimes, so conflicts often tie on mtime and fall to the device order.
MTIMES = (1_700_000_000_000_000_000, 1_700_000_001_500_000_000, 1_700_000_000_000_000_000 + 999)

edit = st.tuples(st.just("edit"), st.integers(0, 2), st.sampled_from(PATHS), st.sampled_from(MTIMES),
                 st.sampled_from((0o644, 0o600)))
delete = st.tuples(st.just("delete"), st.integers(0, 2), st.sampled_from(PATHS))
rename = st.tuples(st.just("rename"), st.integers(0, 2), st.sampled_from(PATHS), st.sampled_from(PATHS))
sync = st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2))
operations = st.lists(st.one_of(edit, delete, rename, sync), max_size=40)


def tree(state: FolderState) -> dict[str, tuple[EntryKind, bytes, int, int]]:
    return {path: (e.kind, e.content, e.mode, e.mtime_ns) for path, e in state.live().items()}


@dataclass
class Simulation:
    devices: int
    states: list[FolderState] = field(default_factory=list)
    written: set[bytes] = field(default_factory=set)
    replaced: set[bytes] = field(default_factory=set)  # contents a user overwrote or deleted where they saw them
    contents: count = field(default_factory=count)
    now: int = 1_800_000_000_000_000_000

    def __post_init__(self) -> None:
        self.states = [FolderState.of(DEVICES[i]) for i in range(self.devices)]

    def _shown(self, device: int, path: str) -> bytes | None:
        entry = self.states[device].get(path)
        return None if entry is None or entry.deleted else entry.content

    def _set(self, device: int, path: str, seen: Observation | None) -> None:
        self.now += 1
        self.states[device] = record_local_change(self.states[device], path, seen, now_ns=self.now)

    def run(self, operation: tuple[object, ...]) -> None:
        kind, device = operation[0], int(operation[1]) % self.devices  # type: ignore[call-overload]
        if kind == "edit":
            _, _, path, mtime, mode = operation
            assert isinstance(path, str) and isinstance(mtime, int) and isinstance(mode, int)
            if (old := self._shown(device, path)) is not None:
                self.replaced.add(old)
            content = b"v%d" % next(self.contents)
            self.written.add(content)
            self._set(device, path, Observation(EntryKind.FILE, content, len(content), mtime, mode))
        elif kind == "delete":
            path = operation[2]
            assert isinstance(path, str)
            if (old := self._shown(device, path)) is not None:
                self.replaced.add(old)
            self._set(device, path, None)
        elif kind == "rename":
            _, _, source, target = operation
            assert isinstance(source, str) and isinstance(target, str)
            entry = self.states[device].get(source)
            if source == target or entry is None or entry.deleted:
                return
            if (old := self._shown(device, target)) is not None:
                self.replaced.add(old)
            self._set(device, target, Observation(entry.kind, entry.content, entry.size, entry.mtime_ns, entry.mode))
            self._set(device, source, None)
        else:
            other = int(operation[2]) % self.devices  # type: ignore[call-overload]
            self.states[device] = merge(self.states[device], self.states[other]).state

    def settle(self) -> int:
        """Every device merges every other until nothing changes; returns the rounds it took."""
        for rounds in range(1, 20):
            before = list(self.states)
            for i in range(self.devices):
                for j in range(self.devices):
                    if i != j:
                        self.states[i] = merge(self.states[i], self.states[j]).state
            if self.states == before:
                return rounds
        raise AssertionError("the devices did not settle")


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 3), operations)
def test_devices_converge_and_lose_no_write(devices: int, ops: list[tuple[object, ...]]) -> None:
    sim = Simulation(devices)
    for operation in ops:
        sim.run(operation)
    sim.settle()
    trees = [tree(state) for state in sim.states]
    assert all(t == trees[0] for t in trees), "every device ends with the same tree"
    assert all(dict(s.items()) == dict(sim.states[0].items()) for s in sim.states), "and the same entries"
    present = {content for _, content, _, _ in trees[0].values()}
    lost = sim.written - sim.replaced - present
    assert not lost, f"versions no user replaced are in the tree: {lost}"


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 3), st.lists(st.one_of(edit, delete, rename), max_size=25))
def test_no_conflict_copy_without_a_conflict(devices: int, ops: list[tuple[object, ...]]) -> None:
    """Devices that sync fully before every change never see a conflict copy."""
    sim = Simulation(devices)
    for operation in ops:
        sim.run(operation)
        sim.settle()
    assert not any(CONFLICT_MARKER in path for path in sim.states[0])


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 3), operations)
def test_merge_is_idempotent_and_commutative(devices: int, ops: list[tuple[object, ...]]) -> None:
    sim = Simulation(devices)
    for operation in ops:
        sim.run(operation)
    local, *remotes = sim.states
    plan = merge(local, *remotes)
    again = merge(plan.state, *remotes)
    assert again.state == plan.state and not again.touches_disk and not again.conflicts
    assert merge(local, local).state == local and not merge(local, local).touches_disk
    swapped = merge(local, *reversed(remotes))
    assert swapped == plan, "the order of the remotes does not matter"


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 3), operations)
def test_conflict_copies_never_take_a_live_path(devices: int, ops: list[tuple[object, ...]]) -> None:
    sim = Simulation(devices)
    for operation in ops:
        sim.run(operation)
    local, *remotes = sim.states
    plan = merge(local, *remotes)
    for copy in plan.conflicts:
        for state in sim.states:
            held = state.get(copy.copy_path)
            assert held is None or held.deleted or held.same_content(copy.entry)
        kept = plan.state.get(copy.copy_path)
        assert kept is not None and kept.same_content(copy.entry)
    names = [copy.copy_path for copy in plan.conflicts]
    assert len(names) == len(set(names)), "two losers never share a name"


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 3), operations)
# Found by a long run: our losing "b" moves to its conflict copy, then the
# remote's renamed "a.txt" moves onto the now empty "b".
@example(2, [("edit", 0, "b", MTIMES[0], 0o644), ("edit", 1, "a.txt", MTIMES[0], 0o644), ("sync", 0, 1),
             ("rename", 1, "a.txt", "b")])
def test_applying_the_plan_gives_the_merged_tree(devices: int, ops: list[tuple[object, ...]]) -> None:
    """Run the plan on a dict standing for the disk, checking each action's ``replaces`` as the node does."""
    sim = Simulation(devices)
    for operation in ops:
        sim.run(operation)
    local, *remotes = sim.states
    plan = merge(local, *remotes)
    disk = {path: (e.kind, e.content, e.mode, e.mtime_ns) for path, e in local.live().items()}
    for move in plan.moves:
        assert disk.get(move.source, (None, None))[1] == move.replaces.content
        overwritten = disk.get(move.target)
        assert (overwritten is None) == (move.overwrites is None)
        disk.pop(move.source)
        disk[move.target] = (move.entry.kind, move.entry.content, move.entry.mode, move.entry.mtime_ns)
    for write in plan.writes:
        held = disk.get(write.path)
        assert (held is None) == (write.replaces is None)
        assert held is None or write.replaces is not None and held[1] == write.replaces.content
        disk[write.path] = (write.entry.kind, write.entry.content, write.entry.mode, write.entry.mtime_ns)
    for change in plan.metadata:
        disk[change.path] = (change.entry.kind, change.entry.content, change.entry.mode, change.entry.mtime_ns)
    for delete in plan.deletes:
        assert disk.pop(delete.path)[1] == delete.replaces.content
    assert disk == tree(plan.state)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_a_tombstone_wins_only_over_what_it_saw(ops: list[tuple[object, ...]]) -> None:
    sim = Simulation(2)
    for operation in ops:
        sim.run(operation)
    local, remote = sim.states
    merged = merge(local, remote).state
    for path in PATHS:
        mine, theirs, result = local.get(path), remote.get(path), merged.get(path)
        if mine is None or theirs is None or mine.deleted == theirs.deleted:
            continue
        live, tombstone = (mine, theirs) if theirs.deleted else (theirs, mine)
        assert result is not None
        if tombstone.vector.compare(live.vector) is Ordering.AFTER:
            assert result.deleted, "a delete that saw the version removes it"
        else:
            assert not result.deleted and result.content == live.content, "a delete never removes what it did not see"
