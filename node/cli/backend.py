"""One interface for the CLI commands that run with or without a node (specs/network.md §6 Control API).

:func:`open_backend` chooses once: a :class:`RemoteBackend` when a node
runs on the data dir and answers its control API (specs/network.md §6
Control API), else a :class:`LocalBackend` on the data dir's files.  The
commands call the backend and print its results; they never ask which one
they got.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from node.api.client import ControlClient
from node.api.errors import ControlError, NodeNotRunning
from node.cli.remote_backend import RemoteBackend
from node.cli.results import (
    AddResult,
    Earnings,
    GetResult,
    NodeStatus,
    OnProgress,
    PeersReport,
    PinResult,
)
from node.cli.exit_codes import fail
from node.runtime.config import resolve_data_dir
from node.runtime.lock import NODE_LOCK_FILE, holder

if TYPE_CHECKING:
    from node.folders.results import DiffReport, LogEntry, PruneReport, RestoreReport, SnapshotReport
    from protocol.chunks import Link
    from protocol.folders import ReadCap, WriteCap


class Backend(Protocol):
    """What the CLI asks of the data dir, whoever answers.  Failures raise ``BackendError``."""

    def add(self, path: Path, *, convergent: bool, chunk_size: int | None, name: str | None,
            on_progress: OnProgress | None = None) -> AddResult:
        """Encrypt ``path`` into the store (and, through a node, replicate it); return its link.

        ``chunk_size`` None cuts content-defined chunks (specs/chunks.md §5.2); a size, fixed-size chunks.
        """
        ...

    def get(self, link: Link, output: Path | None, *, max_price: int | None = None,
            on_progress: OnProgress | None = None) -> GetResult:
        """Decrypt ``link`` into ``output``; with ``output`` None verify its ciphertext chunks only."""
        ...

    def pin(self, link: str, *, max_price: int | None = None, on_progress: OnProgress | None = None) -> PinResult:
        """Make the node fetch, keep and announce the file (a node is needed)."""
        ...

    def status(self) -> NodeStatus:
        """The running node's status (a node is needed)."""
        ...

    def peers(self) -> PeersReport:
        """The DHT routing table: the node's live one, or the one saved in the data dir."""
        ...

    def earnings(self) -> Earnings:
        """Sats earned, pending, settled and spent, from the ledger."""
        ...

    def folder_snapshot(self, directory: Path, cap: WriteCap, *,
                        on_progress: OnProgress | None = None) -> SnapshotReport:
        """Snapshot ``directory`` as ``cap``'s folder (through a node: upload it and publish its record)."""
        ...

    def folder_prune(self, cap: WriteCap, *, dry_run: bool) -> PruneReport:
        """Apply the retention policy: release what only pruned snapshots need (specs/folders.md §9)."""
        ...

    def folder_log(self, cap: ReadCap) -> tuple[LogEntry, ...]:
        """The folder's kept snapshots, newest first."""
        ...

    def folder_restore(self, cap: ReadCap, dest: Path, *, number: int | None, at_ns: int | None,
                       sub: str | None, on_progress: OnProgress | None = None) -> RestoreReport:
        """Write a snapshot's tree (or its ``sub`` path) under ``dest``."""
        ...

    def folder_diff(self, cap: ReadCap, a: int | None, b: int | None) -> DiffReport:
        """Paths changed from snapshot ``a`` to ``b``."""
        ...

    def sync(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """A ``sync-ACTION`` request to the running node's sync service (a node is needed: it does the syncing)."""
        ...


def answering_node(data_dir: Path) -> ControlClient | None:
    """The client of a node that runs on ``data_dir`` and answers, or None.

    A port file left by a node that was killed does not count: the node must answer ``status``.
    """
    try:
        client = ControlClient.from_data_dir(data_dir)
        client.call_blocking("GET", "status")
    except (NodeNotRunning, ControlError):
        return None
    return client


def open_backend(data_dir_option: str | None) -> Backend:
    """The backend for the data dir chosen by ``--data-dir`` (see ``resolve_data_dir``)."""
    data_dir = resolve_data_dir(data_dir_option)
    client = answering_node(data_dir)
    if client is not None:
        return RemoteBackend(client)
    # A node that holds the data dir but does not answer (starting, stopping, stuck) owns its files all
    # the same: the command must not work on them behind its back.
    locked = holder(data_dir / NODE_LOCK_FILE)
    if locked is not None:
        raise SystemExit(fail(f"{locked} but does not answer its control API (starting or stopping?): "
                              "try again"))
    # Imported only now: the local backend brings the store, the files and the folders, which a command
    # served by a running node never needs (its start-up, issue 22).
    from node.cli.local_backend import LocalBackend

    return LocalBackend(data_dir)
