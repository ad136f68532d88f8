"""The watchdog thread feeding the detector: real files, real inotify, real clock (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import trio

from node.sync import RESCAN_SECONDS, ChangeDetector, LocalChange, watch_folder

# Generous for a loaded machine (a change normally shows after the debounce
# and the settle time), and shorter than the rescan period: a change seen in
# time was seen through an event.
DEADLINE = 30
assert DEADLINE < RESCAN_SECONDS


async def _next_with(changes: trio.MemoryReceiveChannel[tuple[LocalChange, ...]], path: str) -> LocalChange:
    async for batch in changes:
        for change in batch:
            if change.path == path:
                return change
    raise AssertionError("the detector stopped")


async def test_filesystem_events_reach_the_detector_before_any_rescan(tmp_path: Path) -> None:
    detector = ChangeDetector(tmp_path)
    send, changes = trio.open_memory_channel[tuple[LocalChange, ...]](0)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_folder, detector, send)
            (tmp_path / "sub").mkdir()
            (tmp_path / "sub" / "hello.txt").write_bytes(b"hi")
            created = await _next_with(changes, "sub/hello.txt")
            assert created.record is not None and created.record.size == 2
            # Long after the first full scan: only an event can show this before the rescan.
            (tmp_path / "sub" / "hello.txt").rename(tmp_path / "moved.txt")
            moved = await _next_with(changes, "moved.txt")
            assert moved.record is not None
            assert "sub/hello.txt" not in detector.index
            nursery.cancel_scope.cancel()
