"""Progress of folder snapshots and restores: the node's stream events, the CLI's display (node/cli/progress.py)."""

from __future__ import annotations

import trio

from node.cli.progress import RichBar
from node.cli.remote_backend import progress_from_event
from node.cli.results import ProgressEvent, Stage
from node.folders.network import _file_events
from node.folders.results import FileCounter

MIB = 1024 * 1024


def test_folder_events_become_progress_events() -> None:
    assert progress_from_event({"event": "read", "files": 7, "bytes": MIB}) == ProgressEvent(
        stage=Stage.SCANNING, chunks_done=7, bytes_done=MIB)
    assert progress_from_event({"event": "scanned", "files": 9, "files_read": 7, "size": 3 * MIB}) == ProgressEvent(
        stage=Stage.SCANNED, chunks_done=7, bytes_total=3 * MIB)
    assert progress_from_event({"event": "restored", "files": 2, "bytes": 5}) == ProgressEvent(
        stage=Stage.RESTORING, chunks_done=2, bytes_done=5)


def test_file_counter_reports_totals_at_most_once_an_interval() -> None:
    now = [0.0]
    reports: list[tuple[int, int]] = []
    counter = FileCounter(lambda files, size: reports.append((files, size)), every_s=1.0, clock=lambda: now[0])
    for size in (10, 20, 30):
        counter(size)
    assert reports == []  # within the first interval: nothing yet
    now[0] = 1.5
    counter(40)
    counter(50)
    now[0] = 2.5
    counter(60)
    assert reports == [(4, 100), (6, 210)]


async def test_file_events_reach_the_stream_from_the_worker_thread() -> None:
    events: list[dict[str, object]] = []

    async def emit(event: dict[str, object]) -> None:
        events.append(event)

    counter = _file_events("restored", emit)
    counter.every_s = 0.0
    await trio.to_thread.run_sync(counter, 123)
    await trio.to_thread.run_sync(counter, 7)
    assert events == [{"event": "restored", "files": 1, "bytes": 123}, {"event": "restored", "files": 2, "bytes": 130}]


def test_the_bar_describes_folder_stages() -> None:
    bar = RichBar()
    try:
        bar(ProgressEvent(stage=Stage.SCANNING, chunks_done=3, bytes_done=MIB))
        assert bar.progress is not None and bar.task is not None
        task = bar.progress.tasks[0]
        assert (task.description, task.completed) == ("scanning: 3 files", MIB)
        bar(ProgressEvent(stage=Stage.SCANNED, chunks_done=3, bytes_total=2 * MIB))
        assert (task.description, task.total) == ("read 3 files; uploading", 2 * MIB)
        bar(ProgressEvent(stage=Stage.RESTORING, chunks_done=4, bytes_done=5))
        assert task.description == "restoring: 4 files"
    finally:
        bar.close()
