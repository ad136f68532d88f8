"""Keeping a folder's ciphertext with its verify link only (specs/folders.md §7.1 Chunk list, §12 folder-pin).

The pinner resolves the folder's record, reads the chain of chunk lists
(readable with the public key), and brings into the store every chunk the
retention policy keeps: every list and snapshot record (walked from their
roots, as any file with a bare root, specs/chunks.md §6.5) and every chunk
the kept snapshots' lists name, fetched one by one from its holders (paid
GETs), each checked against its address before it is stored.  It never
holds a read key: it cannot open a manifest, a file or a snapshot record.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from node.files.fetcher import ChunkSource, FetchFailed, SourceError
from node.folders.chunklist import Listed, kept_lists, list_chain
from node.store import ChunkStore
from protocol.chunks import Link

log = logging.getLogger("mu.folders")

# Chunks asked for at once while pinning (each from the first holder that serves it).
PIN_PARALLEL = 8

Holders = Callable[[bytes, bool], Awaitable[list[ChunkSource]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class PinReport:
    """What ``mu folder pin`` did for one folder."""

    snapshots: int  # chunk lists in the chain
    kept: int  # snapshots the retention policy keeps (their listed chunks are pinned)
    chunks: int  # chunks pinned: lists, records and the kept snapshots' listed chunks
    fetched: int  # of those, fetched now (the rest were in the store)
    bytes_fetched: int
    newest: int  # the newest snapshot's number


async def fetch_chunk(store: ChunkStore, address: bytes, holders: Holders) -> int:
    """Fetch one chunk from the first of its holders that serves it; return its size.

    The bytes are checked against the address before they are stored (a
    holder that lies is passed over); the replica set from a fresh DHT
    lookup is the last resort.

    Raises:
        FetchFailed: no holder served the chunk.
    """
    for lookup in (False, True):
        for source in await holders(address, lookup):
            try:
                fetched = await source.get_chunk(address)
            except SourceError as exc:
                log.info("chunk %s from %s: %s", address.hex()[:16], source.host_id.hex()[:16], exc)
                continue
            data = bytes(fetched.data)
            if hashlib.sha256(data).digest() != address:
                log.info("chunk %s from %s does not match its address", address.hex()[:16], source.host_id.hex()[:16])
                continue
            await trio.to_thread.run_sync(lambda: store.put(address, data, verify=False))
            return len(data)
    raise FetchFailed(f"no host served chunk {address.hex()}", address)


async def fetch_missing(store: ChunkStore, addresses: list[bytes], holders: Holders) -> tuple[int, int]:
    """Fetch every address the store lacks, ``PIN_PARALLEL`` at once; return (chunks, bytes) fetched.

    ``PIN_PARALLEL`` workers share one iterator, so a list of millions of
    addresses costs no more tasks than a short one.
    """
    todo = iter(addresses)
    sizes: list[int] = []

    async def worker() -> None:
        for address in todo:
            if not await trio.to_thread.run_sync(store.has, address):
                sizes.append(await fetch_chunk(store, address, holders))

    async with trio.open_nursery() as nursery:
        for _ in range(PIN_PARALLEL):
            nursery.start_soon(worker)
    return len(sizes), sum(sizes)


def chain_and_walks(store: ChunkStore, head: Link, ensure: Callable[[Link], None]) -> tuple[list[Listed], list[Listed]]:
    """Read the chain of lists from ``head`` (fetching each first); split it by the retention policy.

    Each snapshot record the lists name is fetched too (its root walked, no key).
    """
    chain = list(list_chain(store, head, ensure))
    for _, listed in chain:
        ensure(Link(listed.record))
    return kept_lists(chain)
