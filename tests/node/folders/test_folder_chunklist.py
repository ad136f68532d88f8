"""Chunk lists on the store: complete, chained, read with the public key alone (specs/folders.md §7.1)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from node.files.local import add_file
from node.folders.chunklist import file_chunks, kept_lists, list_chain, load_chunk_list, store_chunk_list
from node.folders.index import FolderIndex, Head, PinnedFolder
from node.folders.local import snapshot_folder
from node.folders.retention import chunks_to_keep
from node.folders.snapshot import SnapshotTaken
from node.store import ChunkStore
from protocol.chunks import Link, RawWalker
from protocol.folders import KEEP_DAILY_DAYS, encode_record_value, record_chunk_list
from protocol.folders._history import NS_PER_DAY
from tests.helpers.folders import make_tree
from tests.node.folders.test_folder_local import CAP as LOCAL_CAP, Folder

CAP = LOCAL_CAP


class _CountingStore:
    """The store's ``get``, counting the addresses read."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self.read: list[bytes] = []

    def get(self, address: bytes, *, verify: bool = True) -> bytes:
        self.read.append(address)
        return self.store.get(address, verify=verify)


def test_a_files_chunks_are_listed_from_its_manifest_chunks_alone(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(65536 * 9 + 10))
    with ChunkStore(tmp_path / "store") as store:
        added = add_file(store, path, chunk_size=65536, fanout=2)  # a tree three levels deep
        walker = RawWalker(added.link.root)
        every = []
        while (address := walker.next_address()) is not None:
            every.append(address)
            walker.feed(store.get(address))
        counting = _CountingStore(store)
        listed: set[bytes] = set()
        file_chunks(counting, added.link.root, listed)  # type: ignore[arg-type]
    assert listed == set(every) and len(every) == walker.chunks
    assert walker.depth is not None and walker.depth >= 2
    assert len(counting.read) == walker.manifest_chunks and walker.data_chunks == 10  # data chunks are not read


class _Writer:
    """test_folder_local's data dir, with version-2 record values, as a node publishes them."""

    def __init__(self, tmp: Path) -> None:
        self.folder = Folder(tmp)
        self.store, self.index, self.tmp = self.folder.store, self.folder.index, self.folder.tmp
        self.head: Head | None = None

    def snapshot(self, directory: Path, now_ns: int) -> tuple[SnapshotTaken, Link]:
        taken, _ = snapshot_folder(self.store, self.index, directory, CAP, self.head, now_ns=now_ns, tmp_dir=self.tmp)
        listed = store_chunk_list(self.store, CAP.public_key, taken, self.head, self.tmp)
        value = encode_record_value(CAP.read_key, taken.link, public_key=CAP.public_key, chunk_list=listed)
        self.head = Head(taken.snapshot.number, value)
        return taken, listed


@pytest.fixture
def writer(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = _Writer(tmp_path)
    yield w
    w.folder.close()


def test_each_list_names_every_chunk_of_its_snapshot_and_chains_to_the_one_before(tmp_path: Path,
                                                                                  writer: _Writer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    now = time.time_ns()
    first, list1 = writer.snapshot(src, now)
    (src / "docs" / "deep" / "data.bin").write_bytes(os.urandom(400_000))
    second, list2 = writer.snapshot(src, now + 1)
    assert writer.head is not None
    assert record_chunk_list(CAP.public_key, writer.head.value) == list2  # the public key is enough
    assert record_chunk_list(bytes(32), writer.head.value) != list2
    chain = list(list_chain(writer.store, list2, lambda link: None))
    (link2, newest), (link1, oldest) = chain
    assert (newest.number, oldest.number) == (2, 1) and (link2, link1) == (list2, list1)
    assert newest.record == second.link.root and oldest.record == first.link.root
    assert newest.previous == list1 and oldest.previous is None
    # What the retention policy keeps (records, lists, kept manifests and files): the lists name all
    # but the records and the lists themselves (walked from their roots).
    records: set[bytes] = set()
    for taken in (first, second):
        file_chunks(writer.store, taken.link.root, records)
    lists: set[bytes] = set()
    for link in (list1, list2):
        file_chunks(writer.store, link.root, lists)
    listed = set(newest.addresses) | set(oldest.addresses)
    assert listed | records | lists == chunks_to_keep(writer.store, CAP.read_cap, writer.head)
    assert not set(newest.addresses) & records  # the list holds manifests' and files' chunks


def test_a_verify_link_holder_applies_the_retention_policy_from_the_lists(tmp_path: Path, writer: _Writer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    now = time.time_ns()
    writer.snapshot(src, now - (KEEP_DAILY_DAYS + 1) * NS_PER_DAY)
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho changed\n")
    _, newest = writer.snapshot(src, now)
    kept, pruned = kept_lists(list_chain(writer.store, newest, lambda link: None))
    assert [listed.number for _, listed in kept] == [2] and [listed.number for _, listed in pruned] == [1]


def test_a_list_whose_predecessor_has_none_starts_the_chain_again(tmp_path: Path, writer: _Writer) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    taken, _ = snapshot_folder(writer.store, writer.index, src, CAP, None, now_ns=time.time_ns(), tmp_dir=writer.tmp)
    writer.head = Head(1, encode_record_value(CAP.read_key, taken.link))  # version 1: taken without a node
    assert record_chunk_list(CAP.public_key, writer.head.value) is None
    _, listed = writer.snapshot(src, time.time_ns())
    only = load_chunk_list(writer.store, listed)
    assert only.number == 2 and only.previous is None
    assert [item.number for _, item in list_chain(writer.store, listed, lambda link: None)] == [2]


def test_the_index_keeps_one_pin_per_folder_and_says_which_it_replaced(tmp_path: Path) -> None:
    with FolderIndex(tmp_path / "folders.sqlite3") as index:
        first = PinnedFolder(b"k" * 32, b"r" * 32, 1, 10, 5)
        assert index.record_pin(first) is None
        second = PinnedFolder(b"k" * 32, b"s" * 32, 2, 12, 6)
        assert index.record_pin(second) == first
        index.record_pin(PinnedFolder(b"o" * 32, b"t" * 32, 7, 3, 7))
        assert [p.folder for p in index.pins()] == [b"k" * 32, b"o" * 32] and index.pins()[0] == second
