"""Keyless fetch by a bare root: the verify cap over real chunk stores (specs/chunks.md §6.5).

Same hosts as tests/node/network/test_fetcher.py: real ChunkStores read
through a ChunkSource that charges per chunk and can die or lie.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node.files.fetcher import FetchFailed, fetch_raw
from node.store import ChunkStore
from protocol.chunks import FileDecoder
from tests.node.network.test_fetcher import hosts, sample  # noqa: F401  (sample is a fixture)


def decrypt_from(store: ChunkStore, link) -> bytes:
    dec = FileDecoder.from_link(link)
    out = bytearray()
    while (address := dec.next_address()) is not None:
        out += dec.feed(store.get(address))
    return bytes(out)


async def test_raw_fetch_gets_every_chunk_verified_without_the_key(tmp_path: Path, sample) -> None:  # noqa: F811
    src, link, origin = sample
    hs = hosts(tmp_path, origin, [(10, "honest", 0), (10, "liar", 2), (10, "honest", 0)])
    local = ChunkStore(tmp_path / "local")
    result = await fetch_raw(link.root, local, hs, max_price_per_mib=10, window=2)
    assert set(local.list()) == set(origin.list())
    assert result.chunks == len(origin) and result.path is None
    assert result.size == sum(len(origin.get(a)) for a in origin.list())
    assert result.data_chunks == -(-src.stat().st_size // (64 * 1024))
    assert result.banned == (hs[1].host_id,)
    # the bytes kept are the real chunks: a key holder reads the file from them
    assert decrypt_from(local, link) == src.read_bytes()
    # a second run finds everything locally and asks nobody
    asked = sum(h.asked for h in hs)
    again = await fetch_raw(link.root, local, hs, max_price_per_mib=10)
    assert again.progress.local_chunks == len(origin) and sum(h.asked for h in hs) == asked


async def test_raw_fetch_with_a_missing_chunk_fails_naming_it(tmp_path: Path, sample) -> None:  # noqa: F811
    _, link, origin = sample
    hs = hosts(tmp_path, origin, [(0, "honest", 0)])
    data_chunk = next(a for a in origin.list() if len(origin.get(a)) == 64 * 1024 + 16)
    hs[0].store.delete(data_chunk)
    local = ChunkStore(tmp_path / "local")
    with pytest.raises(FetchFailed) as info:
        await fetch_raw(link.root, local, hs, max_price_per_mib=0)
    assert info.value.address == data_chunk
