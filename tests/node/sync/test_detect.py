"""Change detection against real files in a tmp dir, events fed by hand, time on trio's autojump clock.

The detector's looks run in a worker thread; the tests set no deadline
while one may run, so the autojump clock only ever jumps to the
detector's own debounce, settle and rescan timers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from node.sync import detect
from node.sync import (
    DEBOUNCE_SECONDS,
    MAX_PENDING_PATHS,
    RESCAN_SECONDS,
    RESTLESS_SECONDS,
    SETTLE_SECONDS,
    ChangeDetector,
    EventQueue,
    LocalChange,
    scan_tree,
)
from node.sync.ignore import IgnoreRules
from protocol.sync import EntryKind


async def _start(nursery: trio.Nursery, detector: ChangeDetector) -> trio.MemoryReceiveChannel[tuple[LocalChange, ...]]:
    """Start ``detector`` and return once its initial full look is done, so the test's edits come after it."""
    send, receive = trio.open_memory_channel[tuple[LocalChange, ...]](0)
    await nursery.start(detector.serve, send)
    await detector.wait_rounds(1)
    return receive


async def test_the_first_round_reports_what_changed_while_nobody_watched(tmp_path: Path,
                                                                        autojump_clock: trio.abc.Clock) -> None:
    (tmp_path / "kept").write_bytes(b"same")
    (tmp_path / "edited").write_bytes(b"old")
    (tmp_path / "gone").write_bytes(b"bye")
    index = scan_tree(tmp_path, IgnoreRules())
    (tmp_path / "edited").write_bytes(b"new, longer")
    (tmp_path / "gone").unlink()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "new").write_bytes(b"x")
    os.symlink("kept", tmp_path / "link")
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, ChangeDetector(tmp_path, index=index))
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [(c.path, c.record.kind if c.record else None) for c in batch] == [
        ("d", EntryKind.DIRECTORY), ("d/new", EntryKind.FILE), ("edited", EntryKind.FILE), ("gone", None),
        ("link", EntryKind.SYMLINK)]
    assert batch[2].record is not None and batch[2].record.size == len(b"new, longer")


async def test_events_are_debounced_into_one_look(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    detector = ChangeDetector(tmp_path)
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, detector)
        for i in range(5):  # an editor saving in bursts, each event sooner than the debounce
            (tmp_path / "f").write_bytes(b"x" * (i + 1))
            detector.queue.note("f")
            await trio.sleep(DEBOUNCE_SECONDS / 2)
        last_event = trio.current_time() - DEBOUNCE_SECONDS / 2
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [(c.path, c.record.size if c.record else None) for c in batch] == [("f", 5)]
    assert trio.current_time() >= last_event + DEBOUNCE_SECONDS + SETTLE_SECONDS
    assert detector.rounds == 2, "the initial round, then one look for the five events"


async def test_pending_counts_noted_paths_until_their_batch_is_handed_on(tmp_path: Path,
                                                                        autojump_clock: trio.abc.Clock) -> None:
    detector = ChangeDetector(tmp_path)
    async with trio.open_nursery() as nursery:
        send, changes = trio.open_memory_channel[tuple[LocalChange, ...]](0)
        await nursery.start(detector.serve, send)
        assert detector.pending == 1, "the first look, over the whole tree, is under way"
        await detector.wait_rounds(1)
        await trio.testing.wait_all_tasks_blocked()
        assert detector.pending == 0
        for name in ("a", "b"):
            (tmp_path / name).write_bytes(b"x")
            detector.queue.note(name)
        assert detector.pending == 2, "queued, waiting out the debounce"
        await detector.wait_rounds(2)
        assert detector.pending == 2, "looked at, the batch not taken yet: status must not say all is up"
        batch = await changes.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert detector.pending == 0
        # The periodic rescan is due at RESCAN_SECONDS and takes at least SETTLE_SECONDS: look in its middle.
        await trio.sleep_until(RESCAN_SECONDS + SETTLE_SECONDS / 2)
        assert detector.rounds == 2 and detector.pending == 0, "the periodic rescan is under way and no change seen"
        await detector.wait_rounds(3)
        nursery.cancel_scope.cancel()
    assert [c.path for c in batch] == ["a", "b"]


async def test_a_file_still_being_written_is_waited_out(tmp_path: Path, autojump_clock: trio.abc.Clock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    growing = tmp_path / "download.iso"
    growing.write_bytes(b"a" * 100)
    looks: list[int] = []
    real_scan = detect.scan_tree

    def scan_then_append(root: Path, rules: IgnoreRules, under: str = "", *, unsyncable: set[str] | None = None,
                         unreadable: dict[str, str] | None = None) -> dict[str, object]:
        found = real_scan(root, rules, under, unsyncable=unsyncable, unreadable=unreadable)
        looks.append(growing.stat().st_size)
        if len(looks) < 3:  # a writer appends after each of the first two looks
            with growing.open("ab") as out:
                out.write(b"b" * 100)
        return found  # type: ignore[return-value]

    monkeypatch.setattr(detect, "scan_tree", scan_then_append)
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, ChangeDetector(tmp_path))
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [(c.path, c.record.size if c.record else None) for c in batch] == [("download.iso", 300)]
    assert looks == [100, 200, 300, 300], "reported once two looks agreed, never half-written"


async def test_a_file_that_never_stops_changing_is_reported_restless_once_per_period(
        tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_bytes(b"start\n")
    swap = tmp_path / "swap"
    swap.write_bytes(b"0")
    writing = True
    real_scan = detect.scan_tree

    def scan_then_write(root: Path, rules: IgnoreRules, under: str = "", *, unsyncable: set[str] | None = None,
                        unreadable: dict[str, str] | None = None) -> dict[str, object]:
        found = real_scan(root, rules, under, unsyncable=unsyncable, unreadable=unreadable)
        if writing and under in ("", "app.log"):  # once a look: a line appended, the swap file replaced whole
            with log_file.open("ab") as out:
                out.write(b"line\n")
            (tmp_path / "swap.new").write_bytes(os.urandom(8))
            os.replace(tmp_path / "swap.new", swap)  # a new inode each time: never one file that keeps changing
        return found  # type: ignore[return-value]

    monkeypatch.setattr(detect, "scan_tree", scan_then_write)
    detector = ChangeDetector(tmp_path)
    batches: list[tuple[float, tuple[LocalChange, ...]]] = []
    async with trio.open_nursery() as nursery:
        send, changes = trio.open_memory_channel[tuple[LocalChange, ...]](0)
        start = trio.current_time()
        await nursery.start(detector.serve, send)
        for _ in range(2):
            batch = await changes.receive()
            batches.append((trio.current_time(), batch))
            size_then = log_file.stat().st_size
        writing = False
        settled = await changes.receive()
        nursery.cancel_scope.cancel()
    (first_at, first), (second_at, second) = batches
    assert [(c.path, c.restless) for c in first] == [("app.log", True)]
    assert [(c.path, c.restless) for c in second] == [("app.log", True)]
    assert first_at - start >= RESTLESS_SECONDS and second_at - first_at >= RESTLESS_SECONDS
    assert second[0].record is not None and second[0].record.size < size_then, "the last look's record"
    # Once it stops, it settles and is reported as any file is; the swap file only now.
    assert [(c.path, c.restless) for c in settled] == [("app.log", False), ("swap", False)]
    assert settled[0].record is not None and settled[0].record.size == log_file.stat().st_size


async def test_the_periodic_rescan_catches_what_no_event_said(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    (tmp_path / "first").write_bytes(b"1")
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, ChangeDetector(tmp_path))
        assert [c.path for c in await changes.receive()] == ["first"]
        (tmp_path / "silent").write_bytes(b"no event for me")
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [c.path for c in batch] == ["silent"]
    assert trio.current_time() >= RESCAN_SECONDS


async def test_ignored_and_temporary_files_are_not_reported(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    (tmp_path / ".muignore").write_text("*.log\nbuild/\n!keep.log\n")
    for name in ("a.log", "keep.log", ".mu-tmp-1234", "src.c"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.o").write_bytes(b"x")
    detector = ChangeDetector(tmp_path)
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, detector)
        assert [c.path for c in await changes.receive()] == ["keep.log", "src.c"]
        # Ignoring a synced file later stops syncing it; it is not a delete.
        (tmp_path / ".muignore").write_text("*.log\nbuild/\n*.c\n")
        (tmp_path / "keep.log").write_bytes(b"edited")
        (tmp_path / "new.txt").write_bytes(b"y")
        for name in (".muignore", "keep.log", "new.txt"):
            detector.queue.note(name)
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [c.path for c in batch] == ["new.txt"]
    assert set(detector.index) == {"new.txt"}


async def test_sync_s_own_writes_are_not_local_changes(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    from node.sync import look, write_file

    detector = ChangeDetector(tmp_path)
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, detector)
        applied = write_file(tmp_path, "remote.txt", [b"from b"], expected=None, mode=0o644,
                             mtime_ns=1_700_000_000_000_000_000, device=bytes(32))
        detector.acknowledge(applied.path, applied.record)
        (tmp_path / "local.txt").write_bytes(b"mine")
        detector.queue.note("remote.txt")
        detector.queue.note("local.txt")
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [c.path for c in batch] == ["local.txt"]
    assert detector.index["remote.txt"] == look(tmp_path, "remote.txt")


async def test_a_removed_directory_reports_everything_under_it(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_bytes(b"1")
    (tmp_path / "de").write_bytes(b"not under d")
    detector = ChangeDetector(tmp_path, index=scan_tree(tmp_path, IgnoreRules()))
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, detector)
        (tmp_path / "d" / "e" / "f").unlink()
        (tmp_path / "d" / "e").rmdir()
        (tmp_path / "d").rmdir()
        detector.queue.note("d")
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [(c.path, c.record) for c in batch] == [("d", None), ("d/e", None), ("d/e/f", None)]


async def test_a_flood_of_events_becomes_one_full_rescan() -> None:
    queue = EventQueue()
    for i in range(MAX_PENDING_PATHS + 5):
        queue.note(f"f{i}")
    paths, full = queue.take()
    assert full and not paths
    queue.note("again")
    assert queue.take() == ({"again"}, False)
    queue.note(None)
    assert queue.take() == (set(), True)


async def test_names_sync_cannot_carry_are_left_out_and_listed(tmp_path: Path, autojump_clock: trio.abc.Clock,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "back\\slash").write_bytes(b"x")
    os.mkdir(os.fsencode(tmp_path) + b"/latin1-\xe9")
    (tmp_path / "fine").write_bytes(b"y")
    detector = ChangeDetector(tmp_path)
    async with trio.open_nursery() as nursery:
        changes = await _start(nursery, detector)
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [c.path for c in batch] == ["fine"]
    assert detector.unsyncable == {"back\\slash", os.fsdecode(b"latin1-\xe9")}
    assert "back\\\\slash" in caplog.text
