"""The one progress display of the CLI: both backends' progress events, on stderr.

On a terminal a rich progress bar shows them (stdout stays clean for the
link or ``--json``).  Elsewhere (a pipe, a log file, a test) nothing is
shown: ``\\r``-rewritten lines are noise in a log, and scripts read the
result, not the progress.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from node.cli.results import OnProgress, ProgressEvent, Stage

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

# Local files smaller than this finish too fast for a progress bar to help.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def _ignore(event: ProgressEvent) -> None:
    """Quiet, or not a terminal: show nothing."""


class RichBar:
    """Progress on a terminal: one transient rich bar, started by the first event worth showing."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, event: ProgressEvent) -> None:
        local = event.stage in (Stage.ENCRYPTING, Stage.DECRYPTING)
        if local and (event.bytes_total or 0) < PROGRESS_MIN_BYTES:
            return
        progress, task = self._bar()
        if local:
            progress.update(task, description=event.stage.value, total=event.bytes_total, completed=event.bytes_done)
        elif event.stage is Stage.FETCHING:
            progress.update(task, description=f"fetching: {event.chunks_done} chunks, {event.sats_spent} sats",
                            completed=event.bytes_done)
        elif event.stage is Stage.ADDED:
            progress.update(task, description=f"encrypted {event.chunks_done} chunks; replicating",
                            total=event.bytes_total, completed=event.bytes_total)
        elif event.stage in (Stage.SCANNING, Stage.RESTORING):
            progress.update(task, description=f"{event.stage.value}: {event.chunks_done} files",
                            completed=event.bytes_done)
        elif event.stage is Stage.SCANNED:
            progress.update(task, description=f"read {event.chunks_done} files; uploading",
                            total=event.bytes_total, completed=event.bytes_total)
        elif event.stage is Stage.REPLICATED:
            progress.update(task, description=f"chunk {event.chunk_address[:12]} on {event.replicas} nodes")

    def _bar(self) -> tuple[Progress, TaskID]:
        if self.progress is None or self.task is None:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            self.progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), transient=True, console=Console(stderr=True))
            self.progress.start()
            self.task = self.progress.add_task("", total=None)
        return self.progress, self.task

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@contextmanager
def progress_display(*, quiet: bool) -> Iterator[OnProgress]:
    """Yield the callback a backend reports progress to; the display ends with the block."""
    if quiet or not sys.stderr.isatty():
        yield _ignore
        return
    display = RichBar()
    try:
        yield display
    finally:
        display.close()
