"""The one progress display of the CLI: both backends' progress events, on stderr.

On a terminal a rich progress bar shows them (stdout stays clean for the
link or ``--json``).  Elsewhere (a pipe, a log file, a test) the node's
events are printed as the plain ``\\r`` lines scripts have always read, and
local byte counts print nothing.
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
MIB = 1 << 20


def _ignore(event: ProgressEvent) -> None:
    """Quiet: show nothing."""


class PlainLines:
    """Progress on a non-terminal: one rewritten line per node event."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage is Stage.FETCHING:
            self._line(f"\r{event.chunks_done} chunks, {event.bytes_done >> 20} MiB fetched, "
                       f"{event.bytes_per_second / MIB:.1f} MiB/s, {event.sats_spent} sats")
        elif event.stage is Stage.REPLICATED:
            self._line(f"\rchunk {event.chunk_address[:12]} on {event.replicas} nodes")
        elif event.stage is Stage.ADDED:
            self._line(f"encrypted {event.chunks_done} chunks; replicating\n")

    def _line(self, text: str) -> None:
        print(text, end="", file=sys.stderr, flush=True)
        self.shown = True

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr)


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
    if quiet:
        yield _ignore
        return
    display = RichBar() if sys.stderr.isatty() else PlainLines()
    try:
        yield display
    finally:
        display.close()
