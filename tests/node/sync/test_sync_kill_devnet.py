"""``kill -9`` of either syncing node mid-upload and mid-download, 10 times (issue 17, "Must hold").

On a devnet of real ``mu node`` processes, A writes a new file and its node
is killed once its upload has begun (a new paid PUT in its ledger); then B's
node is killed once its download has begun (a paid GET, or a temporary file
in B).  Both are restarted each time.  Afterwards the devices converge, no
file under a final name on B differs from A's, and for every pair of nodes
what one ledger says it spent the other says it earned, to the sat, once
each restarted payer has reconciled its channels with its hosts
(specs/payments.md §After a crash).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from node.ledger import LEDGER_FILE
from node.sync import TEMP_PREFIX
from protocol.payments import Kind
from tests.node.folders.test_folder_devnet import start_node, stop_pid
from tests.node.network.test_devnet import alive, start_devnet
from tests.node.sync.test_engine import tree_hash
from tests.node.sync.test_sync_devnet import add, converge

KILLS = 10
LIMIT = 60.0
POLL = 0.02


def paid(data_dir: Path, kind: Kind) -> int:
    try:
        with sqlite3.connect(f"file:{data_dir / LEDGER_FILE}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM payments WHERE kind = ? AND direction = 'out'",
                                  (kind.value,)).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def wait(what: str, condition, limit: float = LIMIT, show=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what} {show()}"
        time.sleep(POLL)  # polling other processes, bounded


def differ(nodes: list[dict[str, object]], dirs: list[Path]) -> list[tuple[str, str, int, int]]:
    """(payer, payee, spent, earned) for every pair whose two ledgers disagree, read while the nodes run."""
    books: dict[str, dict[tuple[str, str], int]] = {}
    for n, d in zip(nodes, dirs):
        with sqlite3.connect(f"file:{d / LEDGER_FILE}?mode=ro", uri=True, timeout=5) as db:
            books[str(n["node_id"])] = {(peer, direction): int(amount) for peer, direction, amount in db.execute(
                "SELECT peer, direction, COALESCE(SUM(amount), 0) FROM payments GROUP BY peer, direction")}
    return [(payer[:8], payee[:8], spent, books.get(payee, {}).get((payer, "in"), 0))
            for payer, rows in books.items() for (payee, direction), spent in rows.items()
            if direction == "out" and spent and books.get(payee, {}).get((payer, "in"), 0) != spent]


def no_partial_file(a: Path, b: Path) -> None:
    for path in b.rglob("*"):
        if path.is_file() and not path.name.startswith(TEMP_PREFIX) and (a / path.relative_to(b)).is_file():
            mine, theirs = path.read_bytes(), (a / path.relative_to(b)).read_bytes()
            assert len(mine) in (0, len(theirs)) or mine != theirs[:len(mine)], f"partial {path}"


@pytest.mark.slow
def test_kill_9_mid_upload_and_mid_download_converges_ledgers_agree(tmp_path: Path) -> None:
    proc, summary = start_devnet(tmp_path, 5)
    nodes = summary["nodes"]
    dirs = [Path(n["data_dir"]) for n in nodes]
    running = {1: nodes[1]["pid"], 2: nodes[2]["pid"]}
    restarted = []
    try:
        a, b = tmp_path / "a", tmp_path / "b"
        a.mkdir()
        b.mkdir()
        link = add(str(dirs[1]), a)["write_link"]
        add(str(dirs[2]), b, link)
        for i in range(KILLS):
            puts, gets = paid(dirs[1], Kind.PUT), paid(dirs[2], Kind.GET)
            (a / f"file-{i}.bin").write_bytes(os.urandom(6 * 1024 * 1024))
            wait("A's upload to begin", lambda: paid(dirs[1], Kind.PUT) > puts)
            os.kill(running[1], signal.SIGKILL)
            wait("A's node to die", lambda: not alive(running[1]))
            node = start_node(dirs[1], summary)
            restarted.append(node)
            running[1] = node.pid
            # B is a host too: A's upload may have placed most chunks on it, and each other host serves
            # one chunk free, so its download may pay nothing and end between two polls.
            wait("B's download to begin", lambda: paid(dirs[2], Kind.GET) > gets
                 or any(p.name.startswith(TEMP_PREFIX) for p in b.iterdir()) or (b / f"file-{i}.bin").exists())
            no_partial_file(a, b)
            os.kill(running[2], signal.SIGKILL)
            wait("B's node to die", lambda: not alive(running[2]))
            no_partial_file(a, b)
            node = start_node(dirs[2], summary)
            restarted.append(node)
            running[2] = node.pid
        converge(a, b, 120.0)
        assert tree_hash(a) == tree_hash(b)
        # A restarted payer reconciles its open channels once it has rejoined the DHT.
        wait("every payer's ledger to agree with its hosts'", lambda: not differ(nodes, dirs), 120.0,
             lambda: f"(payer, payee, spent, earned): {differ(nodes, dirs)}")
    finally:
        for pid in running.values():
            if alive(pid):
                stop_pid(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert not differ(nodes, dirs)
