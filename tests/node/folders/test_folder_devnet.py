"""Folder snapshots on a devnet of real ``mu node`` processes (issue 16, "Must hold").

scripts/devnet starts ``mu chain`` and five paid nodes.  node-2 snapshots
a tree through ``mu folder snapshot`` (its node uploads every chunk to
its R hosts with paid PUTs and publishes the folder's signed record);
node-5 restores with the read link only, node-2 stopped.  The hosts' data
dirs (stores, DHT tables, logs, SQLite files) are grepped for every name
and a plaintext sample; the ledgers must show no chunk paid twice to one
host; ``kill -9`` of the snapshotting node and of the restoring node is
followed by a rerun that completes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from node.folders.index import INDEX_FILE
from node.ledger import LEDGER_FILE, Ledger
from node.runtime.settings import DEFAULTS
from node.store import STORE_DIR
from protocol.chunks import DEFAULT_CHUNK_SIZE, TAG_SIZE
from protocol.payments import Kind, chunk_price
from tests.helpers.folders import make_tree, tree_hash
from tests.node.network.test_devnet import alive, start_devnet, stop_devnet

REPO_ROOT = Path(__file__).resolve().parents[3]
DEADLINE = 120.0
POLL = 0.05
FREE_ALLOWANCE = chunk_price(DEFAULT_CHUNK_SIZE + TAG_SIZE, DEFAULTS.price_get)  # as scripts/devnet gives its nodes


def mu(data_dir: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def mu_json(data_dir: str | Path, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(mu(data_dir, *args, "--json").stdout)  # type: ignore[no-any-return]


def wait_for(what: str, condition) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL)  # polling other processes, bounded by the deadline


def stop_pid(pid: int, sig: int = signal.SIGTERM) -> None:
    os.kill(pid, sig)
    wait_for(f"pid {pid} to exit", lambda: not alive(pid))


def start_node(data_dir: Path, summary: dict) -> subprocess.Popen[bytes]:  # type: ignore[type-arg]
    """``mu node`` on ``data_dir`` again, as scripts/devnet starts it, joined through node-1."""
    info = data_dir / "node.json"
    info.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), "node", "--chain-rpc", summary["chain"]["url"],
            "--chain-cookie", summary["chain"]["cookie"], "--free-allowance", str(FREE_ALLOWANCE),
            "--settle-poll", "1", "--loopback-devnet", "--bootstrap", f"127.0.0.1:{summary['nodes'][0]['dht_port']}"]
    with open(data_dir / "mu-node.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_for("the node to start", lambda: info.exists() and json.loads(info.read_text() or "{}").get("pid") == proc.pid)
    return proc


def secrets_of(tree: Path) -> list[bytes]:
    """Every name in the tree and a plaintext sample of each non-empty file."""
    found = set()
    for path in tree.rglob("*"):
        found.add(os.fsencode(path.name))
        if path.is_file() and not path.is_symlink() and path.stat().st_size:
            found.add(path.read_bytes()[:24])
    return sorted(found)


def assert_hosts_learn_nothing(host_dirs: list[Path], tree: Path) -> None:
    needles = [n for n in secrets_of(tree) if len(n) >= 5]  # short names ("run.sh"...) are checked too
    assert needles
    for host in host_dirs:
        for path in host.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                leaked = [n for n in needles if n in data]
                assert not leaked, f"{path} holds {leaked[:3]}"


def assert_no_chunk_paid_twice(ledger_dirs: list[Path]) -> int:
    """Every PUT payment in every ledger is for a distinct (peer, chunk); return how many there were."""
    total = 0
    for d in ledger_dirs:
        with Ledger.open(d / LEDGER_FILE) as ledger:
            puts = [(p.peer, p.direction, p.chunk) for p in ledger.payments() if p.kind is Kind.PUT]
        repeated = [k for k, n in Counter(puts).items() if n > 1]
        assert not repeated, f"{d.name} paid or was paid twice for {len(repeated)} chunks"
        total += len(puts)
    return total


def store_bytes(data_dir: Path) -> int:
    """Bytes of the chunk files in a node's store (its shard directories)."""
    return sum(path.stat().st_size for path in (data_dir / STORE_DIR).glob("??/*"))


def sent_chunks(data_dir: Path) -> int:
    import sqlite3
    try:
        with sqlite3.connect(f"file:{data_dir / INDEX_FILE}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM sent_chunks").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_restore_elsewhere_with_the_read_link_hosts_learn_nothing_kill_9_reruns_complete(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "many").mkdir()
    for i in range(30):
        (src / "many" / f"record-{i:02}.dat").write_bytes(os.urandom(48 * 1024))
    make_tree(src)
    # Restored last (files go in name order): the restore is still fetching it when the test, having
    # seen "many" appear, kills the node (the small files alone could all be restored by then).
    (src / "z-large.dat").write_bytes(os.urandom(48 * 1024 * 1024))
    proc, summary = start_devnet(tmp_path, 5)
    extra: list[subprocess.Popen[bytes]] = []
    try:
        dirs = [Path(n["data_dir"]) for n in summary["nodes"]]
        writer, reader = dirs[1], dirs[4]
        links = mu_json(writer, "folder", "create", str(src))
        assert set(links) == {"write", "read", "verify"}

        # kill -9 of the snapshotting node once some chunks are out; the rerun completes.
        snap = subprocess.Popen([sys.executable, "-m", "node", "--data-dir", str(writer), "folder", "snapshot",
                                 str(src), "--json"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for("some chunks to be sent", lambda: sent_chunks(writer) >= 5 or snap.poll() is not None)
        stop_pid(summary["nodes"][1]["pid"], signal.SIGKILL)
        snap.communicate(timeout=60)
        assert snap.returncode != 0, "the snapshot finished before the kill: nothing was tested"
        killed_after = sent_chunks(writer)
        extra.append(start_node(writer, summary))
        first = mu_json(writer, "folder", "snapshot", str(src))
        assert first["number"] == 1 and first["files"] == 36 and first["under_replicated"] == 0
        assert first["published_to"] > 0
        assert killed_after > 0  # the ledgers, read at the end, show none of those paid for again
        print(f"\nsnapshot 1 after kill -9: {killed_after} chunks sent before, {first}")

        # One changed file: read alone, and the rest not sent again.
        (src / "many" / "record-07.dat").write_bytes(b"changed " * 1000)
        second = mu_json(writer, "folder", "snapshot", str(src))
        assert second["number"] == 2 and second["files_read"] == 1 and second["changed"] == 1
        assert second["chunks_uploaded"] <= 6  # the file's chunks, the manifest's and the record's
        print(f"snapshot 2: {second}")

        extra.pop().send_signal(signal.SIGTERM)  # node-2 stops: the read link and the hosts are all there is
        wait_for("node-2 to stop", lambda: not (writer / "node.json").exists())
        assert_hosts_learn_nothing([dirs[0], dirs[2], dirs[3], dirs[4]], src)
        output = mu(writer, "folder", "create", "--json").stdout  # any text that is not the folder's links
        assert links["read"] not in output

        # kill -9 of the restoring node once files appear; the rerun completes, nothing partial under a final name.
        held_before = store_bytes(reader)  # node-5 hosts some of the chunks: it was a replica candidate
        dest = tmp_path / "restored"
        restore = subprocess.Popen([sys.executable, "-m", "node", "--data-dir", str(reader), "folder", "restore",
                                    links["read"], str(dest)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        wait_for("files to be restored", lambda: (dest / "many").exists() or restore.poll() is not None)
        stop_pid(summary["nodes"][4]["pid"], signal.SIGKILL)
        restore.communicate(timeout=60)
        assert restore.returncode != 0, "the restore finished before the kill: nothing was tested"
        for path in dest.rglob("*"):
            if path.is_file() and not path.is_symlink() and not re.match(r"^\..*\.mu-(restore|partial)-", path.name):
                assert path.read_bytes() == (src / path.relative_to(dest)).read_bytes(), f"{path} is partial"
        extra.append(start_node(reader, summary))
        log = mu_json(reader, "folder", "log", links["read"])["snapshots"]
        assert [e["number"] for e in log] == [2, 1] and log[0]["changed"] == 1
        done = mu_json(reader, "folder", "restore", links["read"], str(dest))
        assert done["number"] == 2 and done["files"] + done["already"] == 36
        assert tree_hash(dest) == tree_hash(src)
        # The files were fetched into place as mu get does: the store kept their manifests, not their data.
        grown = store_bytes(reader) - held_before
        print(f"node-5's store grew by {grown} bytes over the restore")
        assert grown < 1024 * 1024
        old = mu_json(reader, "folder", "restore", links["read"], str(tmp_path / "old"), "--snapshot", "1",
                      "--path", "many/record-07.dat")
        assert old["files"] == 1 and (tmp_path / "old" / "many" / "record-07.dat").stat().st_size == 48 * 1024
        diff = mu_json(reader, "folder", "diff", links["read"], "1", "2")
        assert diff["changed"] == ["many/record-07.dat"] and not diff["added"] and not diff["removed"]
        # A verify link cannot read, and a typo is refused with a reason.
        refused = mu(reader, "folder", "log", links["verify"], check=False)
        assert refused.returncode == 4 and "verify link" in refused.stderr
        typo = mu(reader, "folder", "log", links["read"][:-1] + ("2" if links["read"][-1] != "2" else "3"), check=False)
        assert typo.returncode == 4 and "checksum" in typo.stderr
    finally:
        for p in extra:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)
        if proc.poll() is None:
            stop_devnet(proc, summary) if all(alive(n["pid"]) for n in summary["nodes"]) else _stop_rest(proc)
    ledger_dirs = [d for d in dirs if (d / LEDGER_FILE).exists()]
    puts = assert_no_chunk_paid_twice(ledger_dirs)
    print(f"{puts} PUT payments in {len(ledger_dirs)} ledgers, none repeated")
    assert puts > 0
    for d in dirs:  # the capabilities are never logged
        text = (d / "mu-node.log").read_bytes()
        assert all(links[k].encode() not in text and links[k].split(":")[-1].encode() not in text for k in links)


def _stop_rest(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
