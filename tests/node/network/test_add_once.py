"""A networked add pushes and pins the chunks it seals, without reading back, walking or re-hashing them (issue 22).

``add_file`` names every chunk of the file once by the hash it sealed it
under (``AddResult.addresses``, which the add pins) and hands each to
``on_sealed``, from which ``replicate_chunks`` pushes it (specs/network.md
§7 Replication).  Real DHT nodes and transports on loopback
(tests/helpers/network.py), real stores.
"""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path

import pytest
import trio

import node.files.uploader as uploader_module
from node.files.fetcher import fetch_file
from node.files.local import AddResult, add_file
from node.files.locate import DhtResolver
from node.files.uploader import ReplicationReport, replicate_chunks
from node.store import ChunkStore
from node.store.retention import file_addresses
from protocol.chunks import CDC_MAX, MAX_SEALED_SIZE
from tests.helpers.network import Node, network

CHUNK = 64 * 1024
MiB = 1024 * 1024


@pytest.mark.parametrize("chunk_size", [None, CHUNK])
def test_add_names_every_chunk_once_root_last(tmp_path: Path, chunk_size: int | None) -> None:
    store = ChunkStore(tmp_path / "chunks")
    src = tmp_path / "file.bin"
    src.write_bytes(random.Random(7).randbytes(3 * MiB + 5))
    added = add_file(store, src, chunk_size=chunk_size)
    walked = file_addresses(store, added.link)
    assert sorted(added.addresses) == sorted(set(walked)) and len(added.addresses) == len(set(added.addresses))
    assert added.addresses[-1] == added.link.root


def test_a_file_repeating_its_chunks_names_each_once(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    src = tmp_path / "twice.bin"
    src.write_bytes(random.Random(8).randbytes(4 * MiB) * 2)
    added = add_file(store, src, chunk_secret=b"c" * 32)  # content-keyed: equal chunks, equal addresses
    assert len(set(added.addresses)) == len(added.addresses) < added.chunks
    assert set(added.addresses) == set(file_addresses(store, added.link))


async def add_and_replicate(uploader: Node, src: Path, *, chunk_size: int | None = None
                            ) -> tuple[AddResult, ReplicationReport, list[int]]:
    """``add_file`` on ``uploader`` with each sealed chunk pushed by ``replicate_chunks``, wired as
    node/files/network.py wires them; the add, the replication's report and the sealed chunks' sizes."""
    send, recv = trio.open_memory_channel[tuple[bytes, bytes]](0)
    reports: list[ReplicationReport] = []
    sizes: list[int] = []

    async def replicate() -> None:
        async with recv:
            reports.append(await replicate_chunks(recv, uploader.dialer()))

    def on_sealed(address: bytes, chunk: bytearray) -> None:
        sizes.append(len(chunk))
        trio.from_thread.run(send.send, (address, bytes(chunk)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(replicate)
        async with send:
            added = await trio.to_thread.run_sync(
                functools.partial(add_file, uploader.store, src, chunk_size=chunk_size, on_sealed=on_sealed))
    return added, reports[0], sizes


async def assert_fetched_from_replicas_alone(tmp_path: Path, uploader: Node, fetcher: Node, added: AddResult,
                                             src: Path) -> None:
    uploader.scope.cancel()  # the file must come from the replicas alone
    out = tmp_path / "fetched.bin"
    result = await fetch_file(added.link, out, [], max_price_per_mib=0,
                              resolver=DhtResolver(fetcher.dialer(), added.link.root),
                              store=ChunkStore(tmp_path / "fresh"))
    assert out.read_bytes() == src.read_bytes() and result.progress.local_chunks == 0


async def test_chunks_pushed_as_sealed_are_not_read_back_or_walked_and_the_file_comes_back(
        tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(20 * CHUNK + 11))
    async with network(tmp_path, 5) as nodes:
        uploader, fetcher = nodes[0], nodes[4]

        def no_walk(root: bytes) -> None:
            raise AssertionError("the add hands over its chunks: no walk")

        def no_read(self: ChunkStore, address: bytes, *, verify: bool = True) -> bytes:
            raise AssertionError("the add hands over its chunks: no read back")

        monkeypatch.setattr(uploader_module, "RawWalker", no_walk)
        monkeypatch.setattr(ChunkStore, "get", no_read)
        added, report, _ = await add_and_replicate(uploader, src, chunk_size=CHUNK)
        assert report.chunks == len(added.addresses) and report.under_replicated == 0
        assert report.replicas_confirmed == 3 * report.chunks and report.dht_lookups == 1  # one view, complete
        monkeypatch.undo()
        await assert_fetched_from_replicas_alone(tmp_path, uploader, fetcher, added, src)


async def test_a_file_cut_at_the_longest_chunk_is_added_and_fetched_over_the_network(tmp_path: Path) -> None:
    # Equal bytes never meet the cut condition: format 3 cuts them at CDC_MAX, the
    # longest chunk mu makes (4 MiB and the tag), which must cross the wire both ways.
    src = tmp_path / "zeros.bin"
    src.write_bytes(bytes(2 * CDC_MAX + 5))
    async with network(tmp_path, 5) as nodes:
        uploader, fetcher = nodes[0], nodes[4]
        added, report, sizes = await add_and_replicate(uploader, src)
        assert max(sizes) == MAX_SEALED_SIZE
        assert report.under_replicated == 0 and report.replicas_confirmed == 3 * report.chunks
        await assert_fetched_from_replicas_alone(tmp_path, uploader, fetcher, added, src)
