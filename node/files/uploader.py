"""Replicating an added file to the network (specs/network.md §3, §7).

Every chunk of a file (the manifest chunks and the data chunks) is pushed
to the R nodes XOR-closest to its DHT key: by ``replicate_chunks`` as ``mu
add`` seals it (node/files/network.py), or by ``replicate_file`` walking a
file already in the store.  The nodes are computed from one lookup (around
the root, or an add's first chunk) when that lookup saw the whole network
(node/files/locate.py ``PlacementView``), else found by a DHT lookup per
chunk.  A node that cannot be reached or refuses is replaced
by the next closest; a node that could not be dialled, broke its session or
let a PUT time out is skipped for the rest of the add, so a dead node costs
one bounded attempt per add (specs/network.md §7 Replication, providers,
republishing).  The uploader then announces itself as a
provider of the file's root (``announce_root``), so fetchers find it even when replicas are
gone.  Chunks are pushed ``PARALLEL_CHUNKS`` at a time, which also bounds
the memory held (that many chunks).

Every node that did not take a chunk is reported with its reason (a
:class:`ReplicaFailure`), and so is a chunk for which no node was left to
ask: ``mu add`` prints them and exits non-zero when a chunk has fewer than R
replicas (specs/network.md §6 Control API).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial

import trio

from node.bitcoin.rpc import RPCError, RPCTransportError
from node.bitcoin.wallet import WalletError
from node.files.locate import PeerDialer, PlacementView
from node.store import ChunkStore
from node.transport import Session, SessionBroken, SessionClosed, TransportError
from protocol.payments import PaymentError, PriceTooHigh
from protocol.chunks import Link, RawWalker
from protocol.fetch import DEFAULT_REPLICAS, dht_key

log = logging.getLogger("mu.uploader")

# Chunks in flight.  A chunk's R PUTs go one after another: with 8, a host had fewer PUTs at once
# than its paid window allows, and a 256 MiB add ran 2-15% slower than with 24 (5 alternating pairs).
PARALLEL_CHUNKS = 24
# Closest nodes considered per chunk, so that R can still be met when some fail.
SPARE_CANDIDATES = 5
PUT_TIMEOUT = 30.0
# Failed attempts kept for the report, and characters of each reason: the add result is one control
# API event line, at most MAX_EVENT_BYTES (specs/network.md §6 Control API).  ``under_replicated``
# still counts every chunk.
MAX_REPORTED_FAILURES = 100
MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaFailure:
    """A replica of ``chunk`` that was not stored, and why.

    ``node_id`` is the node that failed, or None when the chunk ran out of
    nodes to ask (fewer reachable candidates than replicas).
    """

    chunk: bytes
    node_id: bytes | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkPlaced:
    """One chunk pushed: where it now lives, and every attempt that failed on the way."""

    address: bytes
    replicas: tuple[bytes, ...]
    failures: tuple[ReplicaFailure, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicationReport:
    chunks: int
    replicas_wanted: int  # R, per chunk
    replicas_confirmed: int
    under_replicated: int  # chunks stored on fewer than R other nodes
    announced_to: int  # DHT nodes that stored our provider record for the root
    failures: tuple[ReplicaFailure, ...]  # failed attempts in the order they happened, the first MAX_REPORTED_FAILURES
    dht_lookups: int = 0  # DHT lookups made to place the chunks (the root's announcement excluded)


Put = Callable[[Session, bytes, bytes], Awaitable[object]]


async def free_put(session: Session, address: bytes, data: bytes) -> object:
    """PUT_CHUNK without payment (hosts storing within their free allowance)."""
    return await session.put_chunk(address, data)


async def replicate_file(link: Link, store: ChunkStore, dialer: PeerDialer, *, replicas: int = DEFAULT_REPLICAS,
                         put: Put = free_put,
                         on_chunk: Callable[[ChunkPlaced], Awaitable[None]] | None = None,
                         skip: Callable[[bytes], bool] | None = None, view: PlacementView | None = None,
                         announce: bool = True) -> ReplicationReport:
    """Push every chunk of ``link``'s file to its R closest nodes, then announce the root.

    The chunks must be in ``store``.  The manifest tree is walked through
    its cleartext headers (the verify cap, specs/chunks.md §6.5 Walking
    with the bare root), so no key is needed and nothing is decrypted; each local
    chunk is checked against its address on the way.
    ``put`` sends one chunk: :func:`free_put`, or a paying one (node/exchange/paying.py).
    A chunk for which ``skip`` returns True is walked but not sent (it is on
    the network already: folder snapshots, specs/folders.md §10) and not counted.
    ``view``, if given, is the placement view of a whole operation (a folder
    snapshot's files) and no lookup is made for this file's; with ``announce``
    False the caller announces one provider record for the whole operation.

    Raises:
        node.store.ChunkNotFound: a chunk of the file is not in the store.
        protocol.chunks.IntegrityError: the store holds wrong bytes.
    """
    lookups_before = dialer.lookups
    if view is None:
        view = await dialer.view(link.root)
    walker = RawWalker(link.root)

    async def chunks() -> AsyncGenerator[tuple[bytes, bytes], None]:
        while (address := walker.next_address()) is not None:
            # The walker hashes the bytes against the address: the store need not.
            data = await trio.to_thread.run_sync(partial(store.get, address, verify=False))
            walker.feed(data)
            if skip is None or not skip(address):
                yield address, data

    async with aclosing(chunks()) as stream:
        report = await replicate_chunks(stream, dialer, view=view, replicas=replicas, put=put, on_chunk=on_chunk)
    announced_to = await announce_root(dialer, link.root) if announce else 0
    return dataclasses.replace(report, announced_to=announced_to, dht_lookups=dialer.lookups - lookups_before)


async def announce_root(dialer: PeerDialer, root: bytes) -> int:
    """Announce this node as a provider of ``root``; return how many DHT nodes stored the record."""
    announcement = await dialer.dht.announce_provider(dht_key(root), tcp_port=dialer.transport.port)
    return len(announcement.stored_at)


async def replicate_chunks(chunks: AsyncIterable[tuple[bytes, bytes]], dialer: PeerDialer, *,
                           view: PlacementView | None = None, replicas: int = DEFAULT_REPLICAS, put: Put = free_put,
                           on_chunk: Callable[[ChunkPlaced], Awaitable[None]] | None = None) -> ReplicationReport:
    """Push each (address, bytes) of ``chunks`` to its R closest nodes as it comes; announce nothing.

    A chunk that comes twice is pushed once.  Without ``view`` the placement
    view is taken around the first chunk's address when it comes: an add
    that pushes chunks as it seals them has no root yet (specs/network.md
    §3 Resolving placement from a view).  The report's ``announced_to`` is 0.
    """
    slots = trio.Semaphore(PARALLEL_CHUNKS)
    counts = {"chunks": 0, "confirmed": 0, "under": 0}
    failures: list[ReplicaFailure] = []
    lookups_before = dialer.lookups
    dead: set[bytes] = set()  # nodes dead to this add: at most the nodes it met
    pushed: set[bytes] = set()  # at most the file's chunks, as the add's own list of them

    async def place(view: PlacementView, address: bytes, data: bytes) -> None:
        try:
            placed = await _place_chunk(dialer, view, dead, put, address, data, replicas)
        finally:
            slots.release()
        counts["confirmed"] += len(placed.replicas)
        failures.extend(placed.failures[:MAX_REPORTED_FAILURES - len(failures)])
        if len(placed.replicas) < replicas:
            counts["under"] += 1
            log.warning("chunk %s stored on %d of %d nodes: %s", address.hex(), len(placed.replicas), replicas,
                        "; ".join(f.reason for f in placed.failures))
        if on_chunk is not None:
            await on_chunk(placed)

    async with trio.open_nursery() as nursery:
        async for address, data in chunks:
            if address in pushed:
                continue
            pushed.add(address)
            if view is None:
                view = await dialer.view(address)
            counts["chunks"] += 1
            await slots.acquire()
            nursery.start_soon(place, view, address, data)
    return ReplicationReport(chunks=counts["chunks"], replicas_wanted=replicas, replicas_confirmed=counts["confirmed"],
                             under_replicated=counts["under"], announced_to=0,
                             failures=tuple(failures), dht_lookups=dialer.lookups - lookups_before)


def _reason(exc: Exception) -> str:
    """Why a PUT failed, never empty (a timeout's own message is)."""
    if isinstance(exc, trio.TooSlowError):
        # The wait may be the host, or a new channel's funding waiting for blocks (node/exchange/paying.py).
        return f"no answer within {PUT_TIMEOUT:g} s (the host, or a channel funding waiting for its confirmations)"
    if isinstance(exc, (WalletError, RPCError, RPCTransportError)):
        return f"cannot fund a channel: {exc}"
    return str(exc) or type(exc).__name__


async def _place_chunk(dialer: PeerDialer, view: PlacementView, skip: set[bytes], put: Put, address: bytes,
                       data: bytes, replicas: int) -> ChunkPlaced:
    """Store one chunk on the ``replicas`` closest reachable nodes; say where, and which nodes failed and why.

    A node in ``skip`` is not tried; one that proves dead here joins it.
    """
    placed: list[bytes] = []
    failures: list[ReplicaFailure] = []
    candidates = view.closest(address, replicas + SPARE_CANDIDATES)
    if candidates is None:
        candidates = await dialer.closest_nodes(address, replicas + SPARE_CANDIDATES)
    for node_id in candidates:
        if len(placed) == replicas:
            break
        session = None if node_id in skip else await dialer.session(node_id)
        if session is None:
            skip.add(node_id)
            failures.append(ReplicaFailure(chunk=address, node_id=node_id, reason="unreachable"))
            continue
        try:
            with trio.fail_after(PUT_TIMEOUT):
                await put(session, address, data)
        except (TransportError, PaymentError, PriceTooHigh, WalletError, RPCError, RPCTransportError,
                trio.TooSlowError) as exc:
            failure = ReplicaFailure(chunk=address, node_id=node_id, reason=_reason(exc)[:MAX_REASON_CHARS])
            log.info("PUT %s to %s failed: %s", address.hex(), node_id.hex(), failure.reason)
            failures.append(failure)
            if isinstance(exc, (SessionBroken, SessionClosed, trio.TooSlowError)):  # the node, not the chunk: gone for this add
                skip.add(node_id)
            continue
        placed.append(node_id)
    if len(placed) < replicas:
        failures.append(ReplicaFailure(chunk=address, node_id=None, reason=(
            f"{len(placed)} of {replicas} replicas stored: {len(candidates)} nodes known close to the chunk, "
            f"{len(candidates) - len(placed)} of them failed")))
    return ChunkPlaced(address=address, replicas=tuple(placed), failures=tuple(failures))
