"""Replicating an added file to the network (specs/network.md §3, §7).

After ``mu add`` has encrypted a file into the local store, every chunk (the
manifest chunks and the data chunks) is pushed to the R nodes XOR-closest to
its DHT key, found by a DHT lookup; a node that cannot be reached or refuses
is replaced by the next closest.  The uploader then announces itself as a
provider of the file's root, so fetchers find it even when replicas are
gone.  Chunks are pushed ``PARALLEL_CHUNKS`` at a time, which also bounds
the memory held (that many chunks).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from node.files.locate import PeerDialer
from node.store import ChunkStore
from node.transport import Session, TransportError
from protocol.payments import PaymentError, PriceTooHigh
from protocol.chunks import Link, RawWalker
from protocol.fetch import DEFAULT_REPLICAS, dht_key

log = logging.getLogger("mu.uploader")

PARALLEL_CHUNKS = 8
# Closest nodes considered per chunk, so that R can still be met when some fail.
SPARE_CANDIDATES = 5
PUT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkPlaced:
    """One chunk pushed: where it now lives."""

    address: bytes
    replicas: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationReport:
    chunks: int
    replicas_confirmed: int
    under_replicated: int  # chunks stored on fewer than R other nodes
    announced_to: int  # DHT nodes that stored our provider record for the root


Put = Callable[[Session, bytes, bytes], Awaitable[object]]


async def free_put(session: Session, address: bytes, data: bytes) -> object:
    """PUT_CHUNK without payment (hosts storing within their free allowance)."""
    return await session.put_chunk(address, data)


async def replicate_file(link: Link, store: ChunkStore, dialer: PeerDialer, *, replicas: int = DEFAULT_REPLICAS,
                         put: Put = free_put,
                         on_chunk: Callable[[ChunkPlaced], Awaitable[None]] | None = None) -> ReplicationReport:
    """Push every chunk of ``link``'s file to its R closest nodes, then announce the root.

    The chunks must be in ``store``.  The manifest tree is walked through
    its cleartext headers (the verify cap, specs/chunks.md §6.5 Walking
    with the bare root), so no key is needed and nothing is decrypted; each local
    chunk is checked against its address on the way.
    ``put`` sends one chunk: :func:`free_put`, or a paying one (node/exchange/paying.py).

    Raises:
        node.store.ChunkNotFound: a chunk of the file is not in the store.
        protocol.chunks.IntegrityError: the store holds wrong bytes.
    """
    walker = RawWalker(link.root)
    slots = trio.Semaphore(PARALLEL_CHUNKS)
    counts = {"chunks": 0, "confirmed": 0, "under": 0}

    async def place(address: bytes, data: bytes) -> None:
        try:
            placed = await _place_chunk(dialer, put, address, data, replicas)
        finally:
            slots.release()
        counts["confirmed"] += len(placed)
        if len(placed) < replicas:
            counts["under"] += 1
            log.warning("chunk %s stored on %d of %d nodes", address.hex(), len(placed), replicas)
        if on_chunk is not None:
            await on_chunk(ChunkPlaced(address=address, replicas=tuple(placed)))

    async with trio.open_nursery() as nursery:
        while (address := walker.next_address()) is not None:
            # The walker hashes the bytes against the address: the store need not.
            data = await trio.to_thread.run_sync(partial(store.get, address, verify=False))
            walker.feed(data)
            counts["chunks"] += 1
            await slots.acquire()
            nursery.start_soon(place, address, data)
    announcement = await dialer.dht.announce_provider(dht_key(link.root), tcp_port=dialer.transport.port)
    return ReplicationReport(chunks=counts["chunks"], replicas_confirmed=counts["confirmed"],
                             under_replicated=counts["under"], announced_to=len(announcement.stored_at))


async def _place_chunk(dialer: PeerDialer, put: Put, address: bytes, data: bytes, replicas: int) -> list[bytes]:
    """Store one chunk on the ``replicas`` closest reachable nodes; return their IDs."""
    placed: list[bytes] = []
    for node_id in await dialer.closest_nodes(address, replicas + SPARE_CANDIDATES):
        if len(placed) == replicas:
            break
        session = await dialer.session(node_id)
        if session is None:
            continue
        try:
            with trio.fail_after(PUT_TIMEOUT):
                await put(session, address, data)
        except (TransportError, PaymentError, PriceTooHigh, trio.TooSlowError) as exc:
            log.info("PUT %s to %s failed: %s", address.hex(), node_id.hex(), exc)
            continue
        placed.append(node_id)
    return placed
