"""Each fetched chunk is hashed once (issue 22: the transport's check is passed along, specs/network.md §5).

A chunk whose source already checked SHA-256(bytes) == address (the transport
does) is not hashed again by the scheduler or the decoder; a chunk read from
the local store (resume) is hashed once, by the decoder.
"""

from __future__ import annotations

import hashlib
import os
import types
from pathlib import Path

import pytest
import trio

import protocol.chunks._decoder as decoder_module
from node.files.fetcher import Fetched, fetch_file
from node.files.local import add_file
from node.store import ChunkStore

CHUNK = 64 * 1024


class VerifiedHost:
    """Serves from a store and, like a transport session, vouches that the bytes match the address."""

    host_id = b"\x01" * 20
    price_per_mib = 0
    spent = 0

    def __init__(self, store: ChunkStore) -> None:
        self.store = store

    async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
        await trio.lowlevel.checkpoint()
        return Fetched(self.store.get(address), 0, verified=True)


@pytest.fixture
def hashes(monkeypatch) -> list[int]:
    """Sizes of the buffers the decoder hashes."""
    seen: list[int] = []

    def sha256(data: bytes = b"") -> hashlib._Hash:
        seen.append(len(data))
        return hashlib.sha256(data)

    monkeypatch.setattr(decoder_module, "hashlib", types.SimpleNamespace(sha256=sha256))
    return seen


async def test_fetched_chunks_are_not_hashed_again_by_the_decoder(tmp_path: Path, hashes: list[int]) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(20 * CHUNK + 5))
    origin = ChunkStore(tmp_path / "origin")
    link = add_file(origin, src, chunk_size=CHUNK, fanout=8).link
    out = tmp_path / "out.bin"
    store = ChunkStore(tmp_path / "fetcher")
    result = await fetch_file(link, out, [VerifiedHost(origin)], max_price_per_mib=0, store=store)
    assert out.read_bytes() == src.read_bytes()
    assert result.progress.chunks.chunks_done == len(origin)
    assert hashes == []


async def test_chunks_from_the_store_are_hashed_once(tmp_path: Path, hashes: list[int]) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(20 * CHUNK + 5))
    store = ChunkStore(tmp_path / "fetcher")
    link = add_file(store, src, chunk_size=CHUNK, fanout=8).link
    out = tmp_path / "out.bin"
    result = await fetch_file(link, out, [], max_price_per_mib=0, store=store)
    assert out.read_bytes() == src.read_bytes()
    assert result.progress.local_chunks == len(store)
    assert len(hashes) == len(store)  # once per chunk, not once in feed and again in open_data
