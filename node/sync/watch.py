"""Filesystem events from the ``watchdog`` package into a trio ``EventQueue`` (specs/sync.md §Change detection).

watchdog calls its handler on its own thread; the handler hands each path
to the trio thread with ``trio.from_thread.run_sync`` and the run's token,
so the queue is only ever touched by trio.  Events only say where to look:
the detector stats the paths itself, so a lost or merged event costs a
look, never a wrong state.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from watchdog.events import EVENT_TYPE_CLOSED_NO_WRITE, EVENT_TYPE_OPENED, EventsLostEvent, FileSystemEvent
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from .detect import ChangeDetector, EventQueue, LocalChange

# Events that change nothing on disk.
_READ_ONLY_EVENTS = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})


class _Forwarder(FileSystemEventHandler):
    """watchdog's handler: passes each event's paths, relative to the root, to the queue on the trio thread."""

    def __init__(self, root: str, queue: EventQueue, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self._root = root
        self._queue = queue
        self._token = token

    def _relative(self, raw: bytes | str) -> str | None:
        path = os.path.relpath(os.fsdecode(raw), self._root)
        if path == "." or path.startswith(".."):
            return None
        return path.replace(os.sep, "/")

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _READ_ONLY_EVENTS:
            return
        if isinstance(event, EventsLostEvent):
            paths: list[str | None] = [None]  # the kernel's queue overflowed: look at everything
        else:
            paths = [self._relative(raw) for raw in (event.src_path, event.dest_path) if raw]
            paths = [path for path in paths if path is not None]
        for path in paths:
            try:
                trio.from_thread.run_sync(self._queue.note, path, trio_token=self._token)
            except trio.RunFinishedError:
                return  # trio has finished: nobody is listening any more


@asynccontextmanager
async def open_watcher(root: Path, queue: EventQueue) -> AsyncIterator[None]:
    """Feed ``root``'s filesystem events into ``queue`` while the block runs.

    The watchdog observer thread is stopped and joined on exit, whatever
    ends the block.
    """
    observer = Observer()
    # Watched and relativised by the same resolved path, so a root reached
    # through a symlink still yields paths relative to it.
    resolved = os.path.realpath(root)
    observer.schedule(_Forwarder(resolved, queue, trio.lowlevel.current_trio_token()), resolved, recursive=True)
    observer.start()
    try:
        yield
    finally:
        observer.stop()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(observer.join)


async def watch_folder(detector: ChangeDetector, changes: trio.abc.SendChannel[tuple[LocalChange, ...]], *,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Events plus periodic rescans of the detector's folder, as batches of local changes on ``changes``.

    Runs until cancelled; the watcher starts before ``task_status.started``,
    so nothing written after that is missed.
    """
    async with open_watcher(detector.root, detector.queue):
        await detector.serve(changes, task_status=task_status)
