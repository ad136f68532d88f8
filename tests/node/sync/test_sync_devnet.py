"""Synced folders on a devnet of real ``mu node`` processes (issue 17, "Must hold").

scripts/devnet starts ``mu chain`` and paid nodes; two of them sync real
directories (``mu sync add``, ``mu sync add --link``).  Each change on one
side must appear on the other within ``PROPAGATION`` seconds, through the
devices' records and the hosts' paid chunks; a device whose node was
stopped catches up from the hosts alone; a read-only device's edits never
reach the writers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.node.folders.test_folder_devnet import mu, start_node, stop_pid
from tests.node.network.test_devnet import start_devnet
from tests.node.sync.test_engine import tree_hash

PROPAGATION = 10.0
POLL = 0.05


def converge(a: Path, b: Path, limit: float = PROPAGATION) -> float:
    """Seconds until ``a`` and ``b`` hold the same synced tree; fails past ``limit``."""
    start = time.monotonic()
    while tree_hash(a) != tree_hash(b):
        assert time.monotonic() - start < limit, f"{a} and {b} did not converge within {limit} s"
        time.sleep(POLL)  # polling other processes' work, bounded by the limit
    return time.monotonic() - start


def add(data_dir: str, directory: Path, link: str | None = None) -> dict:  # type: ignore[type-arg]
    extra = ["--link", link] if link is not None else []
    return json.loads(mu(data_dir, "sync", "add", str(directory), *extra, "--json").stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_two_devices_on_two_nodes_sync_every_kind_of_change_both_ways_and_catch_up_offline(tmp_path: Path) -> None:
    proc, summary = start_devnet(tmp_path, 5)
    try:
        node_a, node_b, node_c = summary["nodes"][1], summary["nodes"][2], summary["nodes"][3]
        a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
        for d in (a, b, c):
            d.mkdir()
        (a / "docs").mkdir()
        (a / "docs/note.txt").write_bytes(b"hello")
        (a / "photo.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        links = add(node_a["data_dir"], a)
        add(node_b["data_dir"], b, links["write_link"])
        assert add(node_c["data_dir"], c, links["read_link"])["read_only"] is True
        converge(a, b, 60.0)  # the first round uploads everything
        converge(a, c, 60.0)
        steps = [
            lambda: (a / "new.txt").write_bytes(b"created"),
            lambda: (a / "docs/note.txt").write_bytes(b"modified"),
            lambda: os.rename(a / "photo.bin", a / "docs/photo.bin"),
            lambda: (a / "empty").mkdir(),
            lambda: (a / "empty").rmdir(),
            lambda: os.chmod(a / "new.txt", 0o600),
            lambda: (a / "new.txt").unlink(),
        ]
        for step in steps:
            step()
            converge(a, b)
        (b / "from-b.txt").write_bytes(b"back from b")
        converge(b, a)
        assert (a / "from-b.txt").read_bytes() == b"back from b"

        # The read-only device: it follows, its edits stay with it.
        converge(a, c)
        (c / "ro-edit.txt").write_bytes(b"never published")
        (a / "after-ro.txt").write_bytes(b"still flowing")
        deadline = time.monotonic() + PROPAGATION
        while not (c / "after-ro.txt").exists():
            assert time.monotonic() < deadline
            time.sleep(POLL)
        assert not (a / "ro-edit.txt").exists() and not (b / "ro-edit.txt").exists()
        status = json.loads(mu(node_c["data_dir"], "sync", "status", str(c), "--json").stdout)
        assert status["read_only"] is True and status["files"] >= 1

        # Offline catch-up: B's node stops, A changes, A's node stops, B starts and converges from hosts.
        stop_pid(node_b["pid"])
        # note.txt first: once the detector has reported the new file, the earlier event is reported too.
        (a / "docs/note.txt").write_bytes(b"changed again")
        (a / "while-b-was-off.txt").write_bytes(b"offline change")
        expected = tree_hash(a)

        def published() -> bool:
            """A's state holds the new file and nothing is left to publish: noted, detected or stored."""
            status = json.loads(mu(node_a["data_dir"], "sync", "status", str(a), "--json").stdout)
            return bool(status["files"] == 6 and status["pending_up"] == 0)

        deadline = time.monotonic() + PROPAGATION
        while not published():
            assert time.monotonic() < deadline, "A did not publish the change"
            time.sleep(POLL)
        stop_pid(node_a["pid"])
        restarted = start_node(Path(node_b["data_dir"]), summary)
        try:
            deadline = time.monotonic() + 60.0
            while tree_hash(b) != expected:
                assert time.monotonic() < deadline, "B did not catch up from the hosts alone"
                time.sleep(POLL)
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
