"""The CLI backend: chosen once per data dir, results as frozen dataclasses, one progress display."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from node.cli import EXIT_NOT_FOUND, EXIT_FAILURE
from node.cli.backend import open_backend
from node.cli.local_backend import LocalBackend
from node.cli.progress import progress_display
from node.cli.remote_backend import progress_from_event
from node.cli.results import (
    AddResult,
    BackendError,
    Fetched,
    GetResult,
    NodeStatus,
    PinResult,
    ProgressEvent,
    RawVerified,
    Replication,
    Stage,
    to_json,
)
from node.runtime.config import load_identity
from protocol.chunks import Link

MIB = 1 << 20


def test_no_node_means_the_local_backend_even_with_a_stale_port_file(tmp_path: Path) -> None:
    assert isinstance(open_backend(str(tmp_path)), LocalBackend)
    (tmp_path / "control.port").write_text("1\n")  # left behind by a killed node
    (tmp_path / "control.token").write_text("00")
    backend = open_backend(str(tmp_path))
    assert isinstance(backend, LocalBackend)
    with pytest.raises(BackendError, match="no node is running") as caught:
        backend.status()
    assert caught.value.exit_code == EXIT_FAILURE


def test_the_local_backend_adds_gets_and_reports_progress(tmp_path: Path) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(300_000))
    backend = LocalBackend(tmp_path / "data")
    events: list[ProgressEvent] = []
    added = backend.add(src, convergent=False, chunk_size=65536, name=None, on_progress=events.append)
    assert added.stored is not None and added.stored.name == "notes.txt" and added.replication is None
    assert events and events[-1] == ProgressEvent(stage=Stage.ENCRYPTING, bytes_done=300_000, bytes_total=300_000)
    assert json.loads(to_json(added)) == {
        "link": added.link, "root": added.root, "size": 300_000, "chunks": added.chunks,
        "new_chunks": added.chunks, "name": "notes.txt", "media_type": "text/plain", "convergent": False}

    out = tmp_path / "copy.txt"
    events.clear()
    got = backend.get(Link.parse(added.link), out, on_progress=events.append)
    assert out.read_bytes() == src.read_bytes() and got.headline() == f"wrote 300000 bytes to {out}"
    assert events[-1].stage is Stage.DECRYPTING and events[-1].bytes_total == 300_000
    raw = backend.get(Link.parse(added.link), None)
    assert raw.verified is not None and raw.headline().startswith(f"verified {raw.verified.chunks} chunks")
    assert set(json.loads(to_json(raw))) == {"root", "path", "size", "raw", "chunks", "data_chunks"}


def test_the_local_backend_reports_what_is_missing(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    with pytest.raises(BackendError, match="no ledger") as no_ledger:
        backend.earnings()
    assert no_ledger.value.exit_code == EXIT_NOT_FOUND
    load_identity(tmp_path)
    with pytest.raises(BackendError, match="no saved routing table") as no_table:
        backend.peers()
    assert no_table.value.exit_code == EXIT_NOT_FOUND
    with pytest.raises(BackendError, match="no node is running"):
        backend.pin("mu:whatever")


def test_results_are_frozen_and_sections_flatten_into_one_json_object() -> None:
    added = AddResult(link="mu:R#K", root="ab", size=5, chunks=1,
                      replication=Replication(replicas_wanted=3, replicas_confirmed=3, under_replicated=0,
                                              announced_to=4, failed_replicas=()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        added.size = 6  # type: ignore[misc]
    assert json.loads(to_json(added)) == {"link": "mu:R#K", "root": "ab", "size": 5, "chunks": 1,
                                          "replicas_wanted": 3, "replicas_confirmed": 3, "under_replicated": 0,
                                          "announced_to": 4, "failed_replicas": []}
    fetched = Fetched(chunks_fetched=2, local_chunks=0, bytes_fetched=10, sats_spent=7, sats_lost=0, seconds=0.5,
                      rate=20, banned=())
    got = GetResult(size=3, path=None, fetched=fetched, verified=RawVerified(chunks=2, data_chunks=1))
    assert got.headline() == "verified 2 chunks (1 data, 3 bytes of ciphertext) into the store, 7 sats"
    pinned = json.loads(to_json(PinResult(fetch=got, announced_to=5)))
    assert pinned["announced_to"] == 5 and pinned["path"] is None and pinned["raw"] is True and pinned["banned"] == []
    status = NodeStatus(node_id="00", uptime_s=1.5, sections={"gc": {"runs": 2}})
    assert json.loads(to_json(status)) == {"node_id": "00", "uptime_s": 1.5, "gc": {"runs": 2}}


def test_node_events_become_progress_events() -> None:
    fetching = progress_from_event({"event": "progress", "chunks_done": 3, "local_chunks": 1, "bytes_fetched": MIB,
                                    "rate": 2 * MIB, "sats_spent": 9})
    assert fetching == ProgressEvent(stage=Stage.FETCHING, bytes_done=MIB, chunks_done=4, sats_spent=9,
                                     bytes_per_second=2.0 * MIB)
    assert progress_from_event({"event": "replicated", "address": "ab" * 32, "replicas": 3}) == ProgressEvent(
        stage=Stage.REPLICATED, chunk_address="ab" * 32, replicas=3)
    assert progress_from_event({"event": "unknown"}) is None


def test_off_a_terminal_no_progress_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    # No \r-rewritten lines in a log or a pipe (issue 20 item 7): progress is for terminals.
    with progress_display(quiet=False) as show:  # pytest's stderr is not a terminal
        show(ProgressEvent(stage=Stage.ENCRYPTING, bytes_done=MIB, bytes_total=100 * MIB))
        show(ProgressEvent(stage=Stage.ADDED, chunks_done=4, bytes_total=MIB))
        show(ProgressEvent(stage=Stage.FETCHING, bytes_done=3 * MIB, chunks_done=4, sats_spent=9,
                           bytes_per_second=1.5 * MIB))
    assert capsys.readouterr().err == ""
    with progress_display(quiet=True) as show:
        show(ProgressEvent(stage=Stage.ADDED, chunks_done=4))
    assert capsys.readouterr().err == ""
