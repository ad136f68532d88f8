"""Content-defined chunks under a folder's secret, counted from the hosts' paid PUTs (issue 16, "Must hold").

A 64 MiB random file is snapshotted through a devnet node; then 100 bytes
are inserted in its middle and the folder snapshotted again, then 1 byte
appended and snapshotted again.  The hosts' ledgers say which chunks they
were paid to store during each snapshot; the writer's store (read once
every node stopped) says which of the big file's chunks are data chunks.
At most 3 new data chunks may be paid for after the insert, at most 2
after the append.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.folders.history import history, load_manifest
from node.folders.index import FolderIndex
from node.folders.local import head_link
from node.ledger import LEDGER_FILE, Ledger
from node.store import STORE_DIR, ChunkStore
from protocol.chunks import RawWalker
from protocol.folders import parse_read_cap
from protocol.payments import Direction, Kind
from tests.node.folders.test_folder_devnet import mu_json
from tests.node.network.test_devnet import start_devnet, stop_devnet

MIB = 1 << 20


def paid_puts(host_dirs: list[Path]) -> set[bytes]:
    """Chunk addresses the hosts were paid to store so far (read beside the running nodes: SQLite WAL)."""
    found = set()
    for d in host_dirs:
        with Ledger.open(d / LEDGER_FILE) as ledger:
            found |= {bytes.fromhex(p.chunk) for p in ledger.payments()
                      if p.kind is Kind.PUT and p.direction is Direction.IN}
    return found


def data_chunks(store: ChunkStore, root: bytes) -> set[bytes]:
    walker = RawWalker(root)
    found = set()
    while (address := walker.next_address()) is not None:
        before = walker.data_chunks
        walker.feed(store.get(address))
        if walker.data_chunks > before:
            found.add(address)
    return found


@pytest.mark.slow
def test_an_insert_and_an_append_upload_only_the_chunks_around_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    data = os.urandom(64 * MIB)
    big.write_bytes(data)
    proc, summary = start_devnet(tmp_path, 4)
    try:
        dirs = [Path(n["data_dir"]) for n in summary["nodes"]]
        writer, hosts = dirs[1], [dirs[0], dirs[2], dirs[3]]
        links = mu_json(writer, "folder", "create", str(src))
        assert mu_json(writer, "folder", "snapshot", str(src))["under_replicated"] == 0
        paid = [paid_puts(hosts)]
        middle = len(data) // 2
        big.write_bytes(data[:middle] + os.urandom(100) + data[middle:])
        assert mu_json(writer, "folder", "snapshot", str(src))["files_read"] == 1
        paid.append(paid_puts(hosts))
        with open(big, "ab") as f:
            f.write(b"!")
        assert mu_json(writer, "folder", "snapshot", str(src))["files_read"] == 1
        paid.append(paid_puts(hosts))
    finally:
        stop_devnet(proc, summary)
    cap = parse_read_cap(links["read"])
    with ChunkStore(writer / STORE_DIR) as store, FolderIndex.open(writer) as index:
        head = index.head(cap.public_key)
        assert head is not None
        versions = list(history(store, head_link(cap, head)))[::-1]
        assert [v.snapshot.number for v in versions] == [1, 2, 3]
        big_data = []
        for v in versions:
            (entry,) = [e for e in load_manifest(store, v.snapshot) if e.path == b"big.bin"]
            assert entry.link is not None
            big_data.append(data_chunks(store, entry.link.root))
    assert big_data[0] <= paid[0] and len(big_data[0]) >= 32  # every data chunk was a paid PUT
    after_insert = (paid[1] - paid[0]) & big_data[1]
    after_append = (paid[2] - paid[1]) & big_data[2]
    print(f"\n{len(big_data[0])} data chunks; new after the insert: {len(after_insert)}, "
          f"after the append: {len(after_append)}")
    assert 1 <= len(after_insert) <= 3
    assert 1 <= len(after_append) <= 2
