"""The CLI backend while a node runs on the data dir: its control API (specs/network.md §6 Control API).

``mu add`` encrypts into the node's store and replicates to the network,
``mu get`` and ``mu pin`` fetch from it and pay, ``mu peers`` and ``mu
earnings`` read the node's live table and open ledger.  Each call is one
blocking call of the control client (no event loop: the command starts
without trio); the node's progress events become :class:`ProgressEvent`
values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from node.api.client import ControlClient
from node.api.errors import ControlError
from node.cli.exit_codes import EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_FAILURE
from node.cli.results import (
    AddResult,
    BackendError,
    Earnings,
    FailedReplica,
    Fetched,
    GetResult,
    NodeStatus,
    OnProgress,
    PeersReport,
    PinResult,
    ProgressEvent,
    RawVerified,
    Replication,
    Stage,
    earnings_from_json,
    peers_from_json,
)
from node.folders.results import DiffReport, LogEntry, PruneReport, RestoreReport, SnapshotReport, from_json

if TYPE_CHECKING:
    from protocol.chunks import Link
    from protocol.folders import ReadCap, WriteCap

Json = dict[str, Any]
T = TypeVar("T")

# The control API's error codes that have their own exit code (README "Exit codes").
EXIT_FOR_ERROR_CODE = {"not-found": EXIT_NOT_FOUND, "integrity": EXIT_INTEGRITY}


def progress_from_event(event: Json) -> ProgressEvent | None:
    """A control API stream event as a progress event; None for events the CLI does not show."""
    kind = event.get("event")
    if kind == "progress":
        return ProgressEvent(stage=Stage.FETCHING, bytes_done=int(event.get("bytes_fetched", 0)),
                             chunks_done=int(event.get("chunks_done", 0)) + int(event.get("local_chunks", 0)),
                             sats_spent=int(event.get("sats_spent", 0)),
                             bytes_per_second=float(event.get("rate", 0)))
    if kind == "replicated":
        return ProgressEvent(stage=Stage.REPLICATED, chunk_address=str(event["address"]),
                             replicas=int(event["replicas"]))
    if kind == "read":
        return ProgressEvent(stage=Stage.SCANNING, chunks_done=int(event["files"]), bytes_done=int(event["bytes"]))
    if kind == "scanned":
        return ProgressEvent(stage=Stage.SCANNED, chunks_done=int(event["files_read"]), bytes_total=int(event["size"]))
    if kind == "restored":
        return ProgressEvent(stage=Stage.RESTORING, chunks_done=int(event["files"]), bytes_done=int(event["bytes"]))
    if kind == "added":
        return ProgressEvent(stage=Stage.ADDED, chunks_done=int(event["chunks"]), bytes_total=int(event["size"]))
    return None


def _get_result(reply: Json) -> GetResult:
    raw = reply.get("raw") is True
    return GetResult(
        size=int(reply["size"]), path=reply.get("path"),
        fetched=Fetched(chunks_fetched=int(reply["chunks_fetched"]), local_chunks=int(reply["local_chunks"]),
                        bytes_fetched=int(reply["bytes_fetched"]), sats_spent=int(reply["sats_spent"]),
                        sats_lost=int(reply["sats_lost"]), seconds=float(reply["seconds"]), rate=int(reply["rate"]),
                        banned=tuple(reply["banned"])),
        verified=RawVerified(chunks=int(reply["chunks"]), data_chunks=int(reply["data_chunks"])) if raw else None,
    )


class RemoteBackend:
    """Serves the CLI through the control API of the node ``client`` talks to."""

    def __init__(self, client: ControlClient) -> None:
        self.client = client

    def _run(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except ControlError as exc:
            raise BackendError(exc.message, EXIT_FOR_ERROR_CODE.get(exc.code, EXIT_FAILURE)) from None

    def _stream(self, path: str, body: Json, on_progress: OnProgress | None) -> Json:
        def on_event(event: Json) -> None:
            progress = progress_from_event(event)
            if progress is not None and on_progress is not None:
                on_progress(progress)

        return self._run(lambda: self.client.run_stream_blocking(path, body, on_event))

    def _call(self, path: str) -> Json:
        return self._run(lambda: self.client.call_blocking("GET", path))

    def add(self, path: Path, *, convergent: bool, chunk_size: int | None, name: str | None,
            on_progress: OnProgress | None = None) -> AddResult:
        body: Json = {"path": str(path.resolve()), "convergent": convergent}
        if chunk_size is not None:
            body["chunk_size"] = chunk_size
        if name is not None:
            body["name"] = name
        reply = self._stream("add", body, on_progress)
        return AddResult(link=reply["link"], root=reply["root"], size=int(reply["size"]), chunks=int(reply["chunks"]),
                         replication=Replication(
                             replicas_wanted=int(reply["replicas_wanted"]),
                             replicas_confirmed=int(reply["replicas_confirmed"]),
                             under_replicated=int(reply["under_replicated"]), announced_to=int(reply["announced_to"]),
                             failed_replicas=tuple(FailedReplica(chunk=str(f["chunk"]), node_id=f["node_id"],
                                                                 reason=str(f["reason"]))
                                                   for f in reply["failed_replicas"])))

    def get(self, link: Link, output: Path | None, *, max_price: int | None = None,
            on_progress: OnProgress | None = None) -> GetResult:
        """Fetch ``link`` into ``output``; with ``output`` None, fetch and verify its ciphertext (``--raw``)."""
        body: Json = {"link": link.root_text, "raw": True} if output is None else {
            "link": str(link), "output": str(output.resolve())}
        if max_price is not None:
            body["max_price_per_mib"] = max_price
        return _get_result(self._stream("get", body, on_progress))

    def pin(self, link: str, *, max_price: int | None = None, on_progress: OnProgress | None = None) -> PinResult:
        body: Json = {"link": link}
        if max_price is not None:
            body["max_price_per_mib"] = max_price
        reply = self._stream("pin", body, on_progress)
        return PinResult(fetch=_get_result(reply), announced_to=int(reply["announced_to"]))

    def status(self) -> NodeStatus:
        reply = self._call("status")
        sections = {k: v for k, v in reply.items() if k not in ("node_id", "uptime_s")}
        return NodeStatus(node_id=str(reply["node_id"]), uptime_s=float(reply["uptime_s"]), sections=sections)

    def peers(self) -> PeersReport:
        return peers_from_json(self._call("peers"))

    def earnings(self) -> Earnings:
        return earnings_from_json(self._call("earnings"))

    def folder_snapshot(self, directory: Path, cap: WriteCap, *,
                        on_progress: OnProgress | None = None) -> SnapshotReport:
        body: Json = {"link": cap.to_string(), "path": str(directory.resolve())}
        return from_json(SnapshotReport, self._stream("folder-snapshot", body, on_progress))

    def folder_prune(self, cap: WriteCap, *, dry_run: bool) -> PruneReport:
        body: Json = {"link": cap.to_string(), "dry_run": dry_run}
        return from_json(PruneReport, self._stream("folder-prune", body, None))

    def folder_log(self, cap: ReadCap) -> tuple[LogEntry, ...]:
        reply = self._stream("folder-log", {"link": cap.to_string()}, None)
        return tuple(from_json(LogEntry, line) for line in reply["snapshots"])

    def folder_restore(self, cap: ReadCap, dest: Path, *, number: int | None, at_ns: int | None,
                       sub: str | None, on_progress: OnProgress | None = None) -> RestoreReport:
        body: Json = {"link": cap.to_string(), "output": str(dest.resolve()), "number": number, "at_ns": at_ns,
                      "sub": sub}
        return from_json(RestoreReport, self._stream("folder-restore", body, on_progress))

    def folder_diff(self, cap: ReadCap, a: int | None, b: int | None) -> DiffReport:
        return from_json(DiffReport, self._stream("folder-diff", {"link": cap.to_string(), "a": a, "b": b}, None))

    def login_url(self) -> str:
        """A one-time URL that logs a browser in to the node's pages (``mu ui``)."""
        return str(self._run(lambda: self.client.call_blocking("POST", "login-link"))["url"])

    def sync(self, action: str, body: Json) -> Json:
        method = "GET" if action == "ls" else "POST"
        return self._run(lambda: self.client.call_blocking(method, f"sync-{action}", body if method == "POST" else None))
