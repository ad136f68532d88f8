"""A verify link is enough to keep a whole folder (issue 16 item 4, specs/folders.md §7.1 Chunk list).

On a devnet of real ``mu chain`` and ``mu node`` processes: node-2 (A)
snapshots a tree twice; node-4 (V) runs ``mu folder pin`` with the verify
link only, fetching (paid GETs) every chunk of the kept snapshots from the
hosts; then node-1, node-2 and node-3 (A and every other host) are
stopped, and node-5 (R) restores with the read link from V alone: the tree
hash matches.  V's data dir and log hold no name and no plaintext.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from node.ledger import LEDGER_FILE, Ledger
from protocol.payments import Direction, Kind
from tests.helpers.folders import make_tree, tree_hash
from tests.node.folders.test_folder_devnet import assert_hosts_learn_nothing, mu, mu_json, stop_pid
from tests.node.network.test_devnet import alive, start_devnet


@pytest.mark.slow
def test_a_node_with_the_verify_link_alone_keeps_what_a_reader_restores_from(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    (src / "bulk").mkdir()
    for i in range(6):
        (src / "bulk" / f"part-{i}.dat").write_bytes(os.urandom(300 * 1024))
    # The pinner is a host too and already holds the chunks placed on it (3 replicas among 5
    # nodes): it fetches only the others, each host's first full chunk free (the devnet's
    # allowance).  48 full chunks make the paid path certain in practice: even where the node
    # IDs put the pinner in two thirds of the replica sets, it fetches fewer than 5 (then some
    # host could have served them all within its allowance) about once in 5,000 runs.
    (src / "bulk" / "large.dat").write_bytes(os.urandom(48 * 1024 * 1024))
    proc, summary = start_devnet(tmp_path, 5)
    nodes = summary["nodes"]
    dirs = [Path(n["data_dir"]) for n in nodes]
    writer, pinner, reader = dirs[1], dirs[3], dirs[4]
    try:
        links = mu_json(writer, "folder", "create", str(src))
        first = mu_json(writer, "folder", "snapshot", str(src))
        assert first["number"] == 1 and first["under_replicated"] == 0

        # The pinner is handed nothing but the verify link (what it learns is checked below).
        pinned = mu_json(pinner, "folder", "pin", links["verify"])
        assert pinned["newest"] == 1 and pinned["kept"] == 1 and pinned["fetched"] > 0
        again = mu_json(pinner, "folder", "pin", links["verify"])
        assert again["fetched"] == 0 and again["chunks"] == pinned["chunks"]

        # A new snapshot: re-running the pin picks it up, fetching only what is new.
        (src / "bulk" / "part-3.dat").write_bytes(os.urandom(200 * 1024))
        (src / "new file.txt").write_bytes(b"a new plaintext marker " * 50)
        second = mu_json(writer, "folder", "snapshot", str(src))
        assert second["number"] == 2 and second["under_replicated"] == 0
        later = mu_json(pinner, "folder", "pin", links["verify"])
        # (some new chunks may have been PUT on the pinner itself, a host like the others: it fetches none of those)
        assert later["newest"] == 2 and later["snapshots"] == 2 and later["kept"] == 2
        assert later["chunks"] > pinned["chunks"] and later["fetched"] <= later["chunks"] - pinned["chunks"]
        print(f"\npin 1: {pinned}\npin 2: {later}")
        listed = mu_json(pinner, "folder", "pin", "--list")["folders"]
        assert [(p["newest"], p["chunks"]) for p in listed] == [(2, later["chunks"])]
        assert listed[0]["folder"] not in links["verify"]  # a public key in hex, never a link

        # A verify link opens nothing: no name or plaintext in the pinner's data dir or log.
        assert_hosts_learn_nothing([pinner], src)

        # Every other host goes, and the writer: the reader has the pinner alone.
        for index in (0, 1, 2):
            stop_pid(nodes[index]["pid"], signal.SIGTERM)
        dest = tmp_path / "restored"
        done = mu_json(reader, "folder", "restore", links["read"], str(dest))
        assert done["number"] == 2
        assert tree_hash(dest) == tree_hash(src)
        # With the read link every GET is priced by the size the manifests give: the pinner refused none.
        refusal = f"refused GetChunk from {nodes[4]['node_id'][:12]}"
        assert refusal not in (pinner / "mu-node.log").read_text()

        refused = mu(pinner, "folder", "pin", links["verify"][:-1] + ("2" if links["verify"][-1] != "2" else "3"),
                     check=False)
        assert refused.returncode == 4 and "checksum" in refused.stderr
    finally:
        for n in nodes:
            if alive(n["pid"]):
                os.kill(n["pid"], signal.SIGTERM)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    with Ledger.open(pinner / LEDGER_FILE) as ledger:
        gets = [p for p in ledger.payments() if p.kind is Kind.GET and p.direction is Direction.OUT]
    assert gets, "the pinner paid for no GET: it fetched nothing through the paid path"
    for d in dirs:  # the links are never logged
        text = (d / "mu-node.log").read_bytes()
        assert all(links[k].split(":")[-1].encode() not in text for k in links)

