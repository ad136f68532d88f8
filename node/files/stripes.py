"""Storing a file as erasure-coded stripes and getting it back from any k shares
(specs/erasure.md §Placement, §Reading).

``store_striped`` walks an added file's chunks (the keyless
:class:`protocol.chunks.RawWalker`, nothing decrypted), encodes them ``k``
at a time into ``n`` shares (:func:`protocol.erasure.encode_stripe`) and puts
each share of a stripe on a different host: the live node XOR-closest to the
share's address that holds no other share of the stripe.  The stripe map goes
to the ``n`` nodes closest to its own address and into the owner's store.

``fetch_striped`` reads the map, then per stripe asks for shares: the data
shares first (no decoding needed), a parity share for every one that fails.
A share's holder is found with HAVE (free) among the nodes closest to the
share's address, cheapest first; every share is checked against its address
by the transport, so a lying host is caught on that share, banned for the
rest of the get, and the share asked elsewhere.  When a stripe cannot get
``k`` shares the get stops with :class:`NotEnoughShares`, naming every
stripe short of shares (a HAVE census of the rest).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from node.files.fetcher import ChunkSource, SourceError, SourceGone, SourceLied, _commit, _fsync_file
from node.files.locate import PeerDialer, PlacementView, price_from_hello
from node.files.uploader import PUT_TIMEOUT, SPARE_CANDIDATES, Put, free_put
from node.store import ChunkNotFound, ChunkStore
from node.transport import Session, TransportError
from protocol.chunks import FileDecoder, Link, RawWalker
from protocol.erasure import NotEnoughShares, Stripe, StripeMap, decode_stripe, encode_stripe
from protocol.payments import PaymentError, PriceTooHigh

log = logging.getLogger("mu.stripes")

# Decoded stripes kept for the decoder at most (the decoder reads stripes in order, one at a time).
DECODED_STRIPES = 2
HAVE_TIMEOUT = 10.0
PART_SUFFIX = ".mu-part"

MakeSource = Callable[[Session], Awaitable[ChunkSource]]


@dataclass(frozen=True, slots=True, kw_only=True)
class StripedReport:
    k: int
    n: int
    map_address: bytes
    stripes: int
    hosts: tuple[tuple[bytes, ...], ...]  # per stripe, the host of each share (share order; b"" when none)
    map_hosts: tuple[bytes, ...]
    short_stripes: tuple[int, ...]  # stripes with a share not placed
    padding: frozenset[tuple[int, int]]  # (stripe, index) of the zero blocks completing the last stripe: no host


@dataclass(frozen=True, slots=True, kw_only=True)
class StripedFetch:
    size: int
    shares_fetched: int
    local_shares: int
    sats_spent: int
    banned: tuple[bytes, ...]
    decoded_stripes: int  # stripes that needed a parity share


async def _candidates(dialer: PeerDialer, view: PlacementView, address: bytes, count: int) -> list[bytes]:
    found = view.closest(address, count)
    return found if found is not None else await dialer.closest_nodes(address, count)


async def put_on_one(dialer: PeerDialer, view: PlacementView, put: Put, address: bytes, data: bytes,
                      avoid: set[bytes], dead: set[bytes], count: int) -> bytes | None:
    """Put one share on the closest reachable node not in ``avoid``; its node ID, or None."""
    for node_id in await _candidates(dialer, view, address, count):
        if node_id in avoid or node_id in dead:
            continue
        session = await dialer.session(node_id)
        if session is None:
            dead.add(node_id)
            continue
        try:
            with trio.fail_after(PUT_TIMEOUT):
                await put(session, address, data)
        except (TransportError, PaymentError, PriceTooHigh, trio.TooSlowError) as exc:
            log.info("PUT share %s to %s failed: %s", address.hex(), node_id.hex(), exc)
            dead.add(node_id)
            continue
        return node_id
    return None


async def store_striped(link: Link, store: ChunkStore, dialer: PeerDialer, *, k: int, n: int,
                        put: Put = free_put, avoid: frozenset[bytes] = frozenset()) -> StripedReport:
    """Encode ``link``'s file (its chunks in ``store``) k-of-n and place the shares and the map.

    Hosts in ``avoid`` (dropped after failed audits, specs/erasure.md §7.3) are never used.

    Raises:
        node.store.ChunkNotFound: a chunk of the file is not in the store.
        protocol.chunks.IntegrityError: the store holds wrong bytes.
    """
    walker = RawWalker(link.root)
    view = await dialer.view(link.root)
    dead: set[bytes] = set(avoid)
    stripes: list[Stripe] = []
    hosts: list[tuple[bytes, ...]] = []
    short: list[int] = []
    pending: list[tuple[bytes, bytes]] = []

    async def flush() -> None:
        stripe, shares = await trio.to_thread.run_sync(encode_stripe, list(pending), k, n)
        pending.clear()
        used: set[bytes] = set()
        placed: list[bytes] = []
        padding = stripe.padding(k)  # the zero blocks completing a short stripe are no shares: no host (§3)
        for i, (address, share) in enumerate(zip(stripe.shares, shares)):
            host = None if i in padding else await put_on_one(dialer, view, put, address, share, used, dead,
                                                               n + SPARE_CANDIDATES)
            if host is not None:
                used.add(host)
            placed.append(host or b"")
        if len(used) < n - len(padding):
            short.append(len(stripes))
        stripes.append(stripe)
        hosts.append(tuple(placed))

    while (address := walker.next_address()) is not None:
        data = await trio.to_thread.run_sync(partial(store.get, address, verify=False))
        walker.feed(data)
        pending.append((address, bytes(data)))
        if len(pending) == k:
            await flush()
    if pending:
        await flush()
    stripe_map = StripeMap(k=k, n=n, root=link.root, stripes=tuple(stripes))
    blob = stripe_map.serialize()
    map_address = hashlib.sha256(blob).digest()
    await trio.to_thread.run_sync(store.put, map_address, blob)
    await trio.to_thread.run_sync(partial(store.pin, [map_address], root=link.root))  # the owner keeps its map
    map_hosts: list[bytes] = []
    for _ in range(n):  # the map is replicated on n hosts: it survives what the stripes survive
        host = await put_on_one(dialer, view, put, map_address, blob, set(map_hosts), dead, n + SPARE_CANDIDATES)
        if host is None:
            break
        map_hosts.append(host)
    return StripedReport(k=k, n=n, map_address=map_address, stripes=len(stripes), hosts=tuple(hosts),
                         map_hosts=tuple(map_hosts), short_stripes=tuple(short),
                         padding=frozenset((s, i) for s, stripe in enumerate(stripes) for i in stripe.padding(k)))


class _StripeReader:
    """Fetches shares for one get: finds holders with HAVE, pays through ``make_source``, bans liars."""

    def __init__(self, dialer: PeerDialer, make_source: MakeSource, store: ChunkStore | None, n: int) -> None:
        self.dialer = dialer
        self.make_source = make_source
        self.store = store
        self.count = n + SPARE_CANDIDATES
        self.banned: set[bytes] = set()
        self.sources: dict[bytes, ChunkSource] = {}
        self.fetched = 0
        self.local = 0
        self.spent = 0
        self.view: PlacementView | None = None

    async def holders(self, address: bytes) -> list[bytes]:
        """Reachable, unbanned nodes near ``address`` that say they hold it, cheapest first."""
        assert self.view is not None
        found: list[tuple[int, bytes]] = []
        for node_id in await _candidates(self.dialer, self.view, address, self.count):
            if node_id in self.banned:
                continue
            session = await self.dialer.session(node_id)
            if session is None:
                continue
            try:
                with trio.fail_after(HAVE_TIMEOUT):
                    present = await session.have((address,))
            except (TransportError, trio.TooSlowError):
                continue
            if present[0]:
                found.append((price_from_hello(session), node_id))
        return [node_id for _, node_id in sorted(found)]

    async def get(self, address: bytes) -> bytes | None:
        """The verified bytes at ``address`` from the local store or a holder; None if no holder gives them."""
        if self.store is not None:
            try:
                data = await trio.to_thread.run_sync(self.store.get, address)
                self.local += 1
                return bytes(data)
            except ChunkNotFound:
                pass
        for node_id in await self.holders(address):
            session = await self.dialer.session(node_id)
            if session is None:
                continue
            try:
                source = self.sources.get(node_id) or await self.make_source(session)
                self.sources[node_id] = source
                fetched = await source.get_chunk(address)
            except SourceLied as exc:
                log.warning("host %s lied about share %s: %s", node_id.hex(), address.hex(), exc)
                self.banned.add(node_id)
                self.spent += exc.paid
                continue
            except (SourceGone, SourceError, PriceTooHigh) as exc:
                log.info("share %s from %s failed: %s", address.hex(), node_id.hex(), exc)
                continue
            self.fetched += 1
            self.spent += fetched.paid
            return bytes(fetched.data)
        return None

    async def stripe(self, stripe: Stripe, k: int) -> dict[int, bytes]:
        """Any ``k`` verified shares of ``stripe`` (fewer if the network has fewer): the zero blocks that
        complete a short stripe as they are, the others fetched."""
        got: dict[int, bytes] = {i: bytes(stripe.block_size) for i in stripe.padding(k)}
        left = stripe.stored(k)
        while len(got) < k and left:
            # Ask as many shares as are still missing, at once; a failed one is replaced by the next index.
            batch, left = left[:k - len(got)], left[k - len(got):]

            async def one(i: int) -> None:
                data = await self.get(stripe.shares[i])
                if data is not None and len(data) == stripe.block_size:
                    got[i] = data

            async with trio.open_nursery() as nursery:
                for i in batch:
                    nursery.start_soon(one, i)
        return got

    async def census(self, stripe_map: StripeMap) -> list[tuple[int, int]]:
        """(stripe, shares with a holder) for every stripe with fewer than k, from HAVE answers only."""
        short: list[tuple[int, int]] = []
        for index, stripe in enumerate(stripe_map.stripes):
            alive = len(stripe.padding(stripe_map.k))
            for address in (stripe.shares[i] for i in stripe.stored(stripe_map.k)):
                local = self.store is not None and self.store.has(address)
                if local or await self.holders(address):
                    alive += 1
            if alive < stripe_map.k:
                short.append((index, alive))
        return short


async def shares_from_network(dialer: PeerDialer, make_source: MakeSource, map_address: bytes, stripe_map: StripeMap,
                              index: int) -> tuple[list[bytes] | None, int]:
    """Every share of stripe ``index``, rebuilt from any k of its shares fetched from live hosts (paid GETs,
    each checked against its address), for an owner that no longer keeps the file's chunks
    (specs/erasure.md §8 Repair); (the n shares or None if fewer than k could be had, sats paid).
    """
    reader = _StripeReader(dialer, make_source, None, stripe_map.n)
    reader.view = await dialer.view(map_address)
    stripe = stripe_map.stripes[index]
    got = await reader.stripe(stripe, stripe_map.k)
    if len(got) < stripe_map.k:
        return None, reader.spent
    chunks = await trio.to_thread.run_sync(decode_stripe, stripe, stripe_map.k, got)
    _, shares = await trio.to_thread.run_sync(encode_stripe, chunks, stripe_map.k, stripe_map.n)
    return shares, reader.spent


async def fetch_striped(link: Link, map_address: bytes, dest: Path, dialer: PeerDialer, *, make_source: MakeSource,
                        store: ChunkStore | None = None) -> StripedFetch:
    """Write ``link``'s file to ``dest`` (atomically, through ``dest.mu-part``) from its k-of-n stripes.

    Raises:
        NotEnoughShares: the map cannot be had, or some stripe has fewer than k shares left
            (the message names every such stripe).
        protocol.erasure.StripeMapError: the map's bytes are not a stripe map.
        protocol.chunks.IntegrityError: a chunk failed authentication (wrong key).
    """
    reader = _StripeReader(dialer, make_source, store, 0)
    reader.view = await dialer.view(map_address)
    reader.count = 2 * SPARE_CANDIDATES + 3  # the map's n is not known yet: ask a wide neighbourhood
    blob = await reader.get(map_address)
    if blob is None:
        raise NotEnoughShares(f"not enough shares: no node holds the stripe map {map_address.hex()}")
    stripe_map = StripeMap.parse(blob)
    if stripe_map.root != link.root:
        raise NotEnoughShares(f"stripe map {map_address.hex()} is for another file ({stripe_map.root.hex()})")
    reader.count = stripe_map.n + SPARE_CANDIDATES
    where = {address: i for i, s in enumerate(stripe_map.stripes) for address, _ in s.chunks}
    decoded: dict[int, dict[bytes, bytes]] = {}
    parity_used = 0
    decoder = FileDecoder.from_link(link)
    part = dest.with_name(dest.name + PART_SUFFIX)
    with open(part, "wb") as out:
        while (address := decoder.next_address()) is not None:
            index = where.get(address)
            if index is None:
                raise NotEnoughShares(f"the stripe map has no chunk {address.hex()}")
            if index not in decoded:
                stripe = stripe_map.stripes[index]
                shares = await reader.stripe(stripe, stripe_map.k)
                if len(shares) < stripe_map.k:
                    short = await reader.census(stripe_map)
                    named = ", ".join(f"stripe {i} ({alive} of {stripe_map.k} shares needed)" for i, alive in short) \
                        or f"stripe {index} ({len(shares)} of {stripe_map.k} shares needed)"
                    raise NotEnoughShares(f"not enough shares: {named}")
                parity_used += any(i >= stripe_map.k for i in shares)
                chunks = await trio.to_thread.run_sync(decode_stripe, stripe, stripe_map.k, shares)
                while len(decoded) >= DECODED_STRIPES:
                    del decoded[next(iter(decoded))]
                decoded[index] = dict(chunks)
            out.write(decoder.feed(decoded[index][address], verified=True))
        await trio.to_thread.run_sync(_fsync_file, out)
    _commit(part, dest)
    return StripedFetch(size=decoder.bytes_out, shares_fetched=reader.fetched, local_shares=reader.local,
                        sats_spent=reader.spent, banned=tuple(reader.banned), decoded_stripes=parity_used)
