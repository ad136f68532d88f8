"""Finding and dialling the nodes that hold a chunk (specs/network.md §3 Placement, §7 Replication).

Holders of a chunk are the R nodes XOR-closest to its DHT key (placement,
found by a DHT lookup for that key) plus the providers of the file's root
(nodes that announced they hold the whole file: its uploader, nodes that
pinned it).  A node is dialled at the TCP port of its signed DHT contact
record (or provider record).

Hosts are resolved once per file, not once per chunk (specs/network.md §3
Placement, Resolving placement from a view): one lookup for the root gives a
:class:`PlacementView` of the live nodes around it; when that lookup met
fewer than K nodes it saw the whole network, and every chunk's replica set is
computed from the view by XOR distance with no round trip.  Otherwise each
chunk still gets its own lookup, run ahead of need and concurrently
(:meth:`DhtResolver.ahead`).  A chunk whose computed holders all fail gets a
real lookup before the fetch gives up on it.

The dialer lives as long as the node, so all it remembers is bounded and
expires (specs/network.md §7 Replication, providers, republishing): open
sessions are cached per node (closed ones dropped, at most
``MAX_CACHED_SESSIONS``, least recently used first out), a node that could
not be reached is not dialled again for ``UNREACHABLE_TTL`` seconds (at most
``MAX_UNREACHABLE`` such nodes remembered), and addresses learned from
provider records are kept for ``MAX_LEARNED_ADDRESSES`` nodes (one that fails to
answer is checked against the node's own contact record, and replaced by it).  Dropping a
session from the cache does not close it: the transport bounds its own
sessions (``Limits.max_peers``, ``idle_timeout``) and hands the same one back
on the next dial.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from node.dht import DhtNode
from node.files.fetcher import ChunkSource, SessionSource
from node.transport import Session, Transport, TransportError
from protocol.fetch import DEFAULT_REPLICAS, MAX_REPLICAS, dht_key, placement
from protocol.kademlia import K

log = logging.getLogger("mu.locate")

# Open sessions the dialer keeps at hand (least recently used dropped first).
MAX_CACHED_SESSIONS = 256
# Nodes remembered as unreachable, and for how long (seconds) they are not
# dialled again: long enough that an operation does not knock on a dead door
# for every chunk, short enough that a node back up is used again.
MAX_UNREACHABLE = 1024
UNREACHABLE_TTL = 300.0
# Node addresses learned from provider records.
MAX_LEARNED_ADDRESSES = 1024
DIAL_TIMEOUT = 10.0
# Per-chunk lookups one resolver runs at once, and lookup results it keeps
# for chunks not yet asked for (specs/network.md §3 Placement).
PARALLEL_LOOKUPS = 8
MAX_LOOKED_UP = 64

_V = TypeVar("_V")


def price_from_hello(session: Session) -> int:
    """The host's retrieval price in sats/MiB from its HELLO terms (0 if it states none)."""
    value = session.peer_hello.terms.get("price_per_mib_get", 0)
    return value if isinstance(value, int) and value >= 0 else 0


class PeerDialer:
    """Dials nodes by node ID through their DHT contact records, caching sessions.

    Every record it keeps is bounded (see the module docstring); times come
    from trio's clock.
    """

    def __init__(self, dht: DhtNode, transport: Transport, *, nursery: trio.Nursery | None = None) -> None:
        self.dht = dht
        self.transport = transport
        # Where dials run when given (the node's own): a caller that stops
        # waiting for one does not end it, so its outcome (a session, or an
        # unreachable mark) serves the next caller (specs/network.md §7 Dialling).
        # Without, each dial runs in its caller's task.
        self._nursery = nursery
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._unreachable: OrderedDict[bytes, float] = OrderedDict()  # node ID -> when to try again
        self._addresses: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._dialing: dict[bytes, _Dial] = {}  # one per dial in progress
        # DHT searches made through this dialer (node lookups and provider
        # searches), for reports and tests; an add reports its part as ``dht_lookups``.
        self.lookups = 0
        # TCP connections attempted, successful or not (reports and tests compare it
        # before and after an operation).
        self.dials = 0

    def learn(self, node_id: bytes, host: str, tcp_port: int) -> None:
        """Remember where a node listens (from a provider record); the first address learned stays."""
        if node_id in self._addresses:
            self._addresses.move_to_end(node_id)
            return
        self._addresses[node_id] = (host, tcp_port)
        _trim(self._addresses, MAX_LEARNED_ADDRESSES)

    def is_unreachable(self, node_id: bytes) -> bool:
        """True while ``node_id`` failed to answer less than ``UNREACHABLE_TTL`` seconds ago."""
        retry_at = self._unreachable.get(node_id)
        if retry_at is None:
            return False
        if trio.current_time() < retry_at:
            return True
        del self._unreachable[node_id]
        return False

    async def session(self, node_id: bytes, *, despite_mark: bool = False) -> Session | None:
        """An open session to ``node_id``, or None if it cannot be reached (now or lately).

        Concurrent callers for one node share one dial: a dead node costs one
        bounded attempt (``DIAL_TIMEOUT``), not one per waiting chunk.
        ``despite_mark``: dial even a node marked unreachable (a caller with
        its own few, spaced attempts, such as the payer's reconcile).
        """
        while (dialing := self._dialing.get(node_id)) is not None:
            await dialing.done.wait()
        self._forget_stale()
        cached = self._sessions.get(node_id)
        if cached is not None:
            self._sessions.move_to_end(node_id)
            return cached
        if not despite_mark and self.is_unreachable(node_id):
            return None
        dial = self._dialing[node_id] = _Dial()
        if self._nursery is None:
            await self._run_dial(node_id, dial)
        else:
            self._nursery.start_soon(self._run_dial, node_id, dial)
            await dial.done.wait()
        return dial.session

    def dialling(self, node_id: bytes) -> bool:
        """Whether a dial to ``node_id`` is in progress."""
        return node_id in self._dialing

    async def _run_dial(self, node_id: bytes, dial: _Dial) -> None:
        try:
            dial.session = await self._dial(node_id)
        except Exception:  # a bug, not the peer: in the node's nursery it must not end the node
            if self._nursery is None:
                raise
            log.exception("dialling %s failed", node_id.hex())
            self._mark_unreachable(node_id)
        finally:
            del self._dialing[node_id]
            dial.done.set()

    async def _dial(self, node_id: bytes) -> Session | None:
        """One bounded attempt (``DIAL_TIMEOUT`` per address) to reach ``node_id``; a failure marks it unreachable.

        An address learned from a provider record may be stale: the node
        restarted on another port since it announced.  When it fails, the
        node's own signed contact record is fetched through the DHT and, if it
        names another address, that one is tried in the same attempt and the
        stale one forgotten.  A failed attempt also drops the DHT's cached
        contact record, so the next one (after ``UNREACHABLE_TTL``) asks the node anew.
        """
        learned = self._addresses.get(node_id)
        if learned is not None:
            session = await self._connect(node_id, learned)
            if session is not None:
                return session
        record = await self.dht.get_contact(node_id)
        current = None if record is None else (record.host, record.tcp_port)
        session = None
        if current is not None and current != learned:
            self._addresses.pop(node_id, None)  # stale: the node's own record says where it is now
            session = await self._connect(node_id, current)
        if session is None:
            self.dht.forget_contact(node_id)  # a cached record may be the stale one: fetched anew next time
            self._mark_unreachable(node_id)
        return session

    async def _connect(self, node_id: bytes, address: tuple[str, int]) -> Session | None:
        self.dials += 1
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                session = await self.transport.connect(node_id, *address)
        except (TransportError, OSError, trio.TooSlowError) as exc:
            log.info("cannot reach %s at %s:%d: %s", node_id.hex(), address[0], address[1], exc)
            return None
        self._unreachable.pop(node_id, None)
        self._sessions[node_id] = session
        _trim(self._sessions, MAX_CACHED_SESSIONS)
        return session

    def _mark_unreachable(self, node_id: bytes) -> None:
        self._unreachable.pop(node_id, None)
        self._unreachable[node_id] = trio.current_time() + UNREACHABLE_TTL
        _trim(self._unreachable, MAX_UNREACHABLE)

    def _forget_stale(self) -> None:
        """Drop closed sessions and unreachable marks past their time (both bounded, so cheap)."""
        for node_id in [n for n, s in self._sessions.items() if not s.is_open]:
            del self._sessions[node_id]
        now = trio.current_time()
        # Marks are appended with a fixed TTL, so the oldest expire first.
        while self._unreachable and next(iter(self._unreachable.values())) <= now:
            self._unreachable.popitem(last=False)

    async def closest_nodes(self, address: bytes, count: int, *, soft: bool = False) -> list[bytes]:
        """Node IDs of other nodes closest to the chunk's DHT key, closest first (up to ``count``).

        Plain ``kademlia`` nodes may be among them; they have no contact
        record, so :meth:`session` reports them unreachable and callers move on.
        ``soft``: the lookup may end without its slow requests (specs/dht.md §6).
        """
        self.lookups += 1
        contacts = (await self.dht.find_nodes(dht_key(address), soft=soft)).contacts
        own = self.dht.node_id
        ids = [c.node_id for c in contacts if c.node_id != own]
        return placement(address, ids, min(count, MAX_REPLICAS)) if ids else []

    async def view(self, address: bytes, *, soft: bool = False) -> PlacementView:
        """The live nodes one lookup around ``address``'s DHT key meets (specs/network.md §3 Placement).

        A lookup that ends with at least one and fewer than K answering nodes,
        none left slow, has heard from every node anyone named: it saw the
        whole network, so the view is complete.  ``soft``: the lookup may end
        without its slow requests (specs/dht.md §6), and the view is then
        not complete.
        """
        self.lookups += 1
        found = await self.dht.find_nodes(dht_key(address), soft=soft)
        own = self.dht.node_id
        ids = [c.node_id for c in found.contacts if c.node_id != own]
        # No answer at all proves nothing (our table may still be empty, just after start-up); a
        # slow request the lookup ended without may be a live node the view would miss.
        return PlacementView(ids, complete=0 < len(ids) and len(found.contacts) < K and not found.slow)

    async def providers(self, key: bytes, *, soft: bool = False) -> list[bytes]:
        """Node IDs that announced they provide ``key`` (not us); their addresses are learned.

        ``soft``: the lookup may end without its slow requests (specs/dht.md §6).
        """
        self.lookups += 1
        records = await self.dht.get_providers(key, soft=soft)
        own = self.dht.node_id
        out: list[bytes] = []
        for record in records:
            if record.node_id != own:
                self.learn(record.node_id, record.host, record.tcp_port)
                out.append(record.node_id)
        return out


class PlacementView:
    """Live node IDs known to one file operation; complete when they are the whole network.

    From a complete view a chunk's replica set is computed (specs/network.md
    §3 Placement) exactly as a lookup for its key would find it, without the
    lookup.
    """

    def __init__(self, node_ids: list[bytes], *, complete: bool) -> None:
        self.node_ids = list(dict.fromkeys(node_ids))  # at most K: one lookup's result
        self.complete = complete

    def closest(self, address: bytes, count: int) -> list[bytes] | None:
        """The ``count`` nodes closest to the chunk's DHT key, or None when the view is not complete."""
        if not self.complete:
            return None
        return placement(address, self.node_ids, min(count, MAX_REPLICAS)) if self.node_ids else []


class _Dial:
    """One dial in progress: set ``done`` once it ended, with its session (None: unreachable)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.session: Session | None = None


def _trim(entries: OrderedDict[bytes, _V], bound: int) -> None:
    """Drop the least recently used entries past ``bound``."""
    while len(entries) > bound:
        entries.popitem(last=False)


SourceFactory = Callable[[Session], Awaitable[ChunkSource]]


async def free_source(session: Session) -> ChunkSource:
    """A source asking without payment (hosts serving within their free allowance)."""
    return SessionSource(session, price_from_hello(session))


class DhtResolver:
    """Holders of each chunk of one file, as :class:`ChunkSource` objects for the fetcher.

    Placement comes from one lookup around the root when that lookup saw the
    whole network (:class:`PlacementView`), else from per-chunk lookups run
    ahead of need, ``PARALLEL_LOOKUPS`` at once (specs/network.md §3
    Placement).  Its lookups are soft (specs/dht.md §6 "Slow requests": a
    dead node others still name costs a fetch's first byte ``SOFT_TIMEOUT``,
    not ``REQUEST_TIMEOUT``), all but a stuck chunk's last resort, which
    waits for every answer.  ``make_source`` turns a session into a source:
    :func:`free_source`, or a paying one (node/exchange/paying.py).  A host it
    refuses (e.g. priced above our maximum) is left out.
    """

    def __init__(self, dialer: PeerDialer, root: bytes, *, replicas: int = DEFAULT_REPLICAS,
                 make_source: SourceFactory = free_source, view: PlacementView | None = None,
                 providers: list[bytes] | None = None) -> None:
        self.dialer = dialer
        self.root = root
        self.replicas = replicas
        self.make_source = make_source
        # A view and providers given are shared by the files of one operation (a folder
        # restore, specs/folders.md §11): this file makes no lookup of its own for them.
        self._view: PlacementView | None = view if view is not None and view.node_ids else None
        self._providers: list[bytes] | None = providers
        self._looked_up: OrderedDict[bytes, list[bytes]] = OrderedDict()  # address -> replica set, from lookups
        self._sources: dict[bytes, ChunkSource] = {}
        self._refused: set[bytes] = set()
        self.lookups = 0  # DHT searches made for this file (the get result's ``dht_lookups``)

    async def _placement_view(self) -> PlacementView:
        if self._view is not None:
            return self._view
        self.lookups += 1
        view = await self.dialer.view(self.root, soft=True)
        if view.node_ids:  # an empty view (a node still joining) is taken again next time
            self._view = view
        return view

    async def _root_providers(self) -> list[bytes]:
        if self._providers is None:
            self.lookups += 1
            self._providers = await self.dialer.providers(dht_key(self.root), soft=True)
        return self._providers

    async def _view_and_providers(self) -> PlacementView:
        """The placement view, with the root's providers looked up beside it while unknown.

        Both lookups start from the same table: one after the other, a dead
        node both meet would cost the first byte ``SOFT_TIMEOUT`` twice.
        """
        if self._providers is not None:
            return await self._placement_view()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._root_providers)
            return await self._placement_view()

    @property
    def looks_up(self) -> bool:
        """Whether chunks' holders come from lookups (``ahead``): until the view is known to be complete."""
        return self._view is None or not self._view.complete

    async def ahead(self, addresses: list[bytes]) -> None:
        """Find the replica sets of chunks about to be asked for, ``PARALLEL_LOOKUPS`` lookups at once.

        Nothing to do when the view is complete: :meth:`holders` computes them.
        """
        if (await self._view_and_providers()).complete:
            return
        todo = [a for a in dict.fromkeys(addresses) if a not in self._looked_up][:MAX_LOOKED_UP]
        limiter = trio.CapacityLimiter(PARALLEL_LOOKUPS)

        async def look_up(address: bytes) -> None:
            async with limiter:
                self.lookups += 1
                ids = await self.dialer.closest_nodes(address, self.replicas, soft=True)
            self._looked_up[address] = ids
            _trim(self._looked_up, MAX_LOOKED_UP)

        async with trio.open_nursery() as nursery:
            for address in todo:
                nursery.start_soon(look_up, address)

    async def holders(self, address: bytes, *, lookup: bool = False) -> list[ChunkSource]:
        """Sources for ``address``: its replica set, then the root's providers.

        With ``lookup`` the replica set comes from a real DHT lookup even when
        the view could compute it: the fetcher's last resort for a chunk whose
        computed holders all failed.

        Candidates not yet sources are dialled at once, each in its own task
        (specs/network.md §7 Dialling).  The answer waits for every replica
        set dial; for the providers' only while no candidate is a source yet
        (with ``lookup``: for every dial).  A provider's dial still going
        then goes on in the dialer, and its session serves a later chunk: a
        dead provider does not hold a chunk whose replica set answered.
        """
        ids = None if lookup else self._looked_up.pop(address, None)
        if ids is None and not lookup:
            ids = (await self._view_and_providers()).closest(address, self.replicas)
        if ids is None:
            self.lookups += 1
            ids = await self.dialer.closest_nodes(address, self.replicas, soft=not lookup)
        providers = [p for p in await self._root_providers() if p not in ids]
        await self._connect(ids, providers, wait_all=lookup)
        return [self._sources[n] for n in ids + providers if n in self._sources]

    async def _connect(self, replica_set: list[bytes], providers: list[bytes], *, wait_all: bool) -> None:
        """Make sources of the candidates not yet sources (see :meth:`holders` for how long it waits)."""
        fresh = [n for n in replica_set + providers if n not in self._sources and n not in self._refused]
        if not fresh:
            return
        settled = trio.Event()  # a provider became a source, or every provider dial ended
        left = [n for n in fresh if n not in replica_set]

        async def connect(node_id: bytes) -> None:
            try:
                session = await self.dialer.session(node_id)
                if session is None:
                    return
                # Once dialled, the source is made whole: a cancelled exchange could leave a link half set up.
                with trio.CancelScope(shield=True):
                    try:
                        self._sources[node_id] = await self.make_source(session)
                    except Exception as exc:  # terms unreadable or too expensive: not a candidate
                        log.info("not using %s: %s", node_id.hex(), exc)
                        self._refused.add(node_id)
                        return
                settled.set()
            finally:
                if node_id in left:
                    left.remove(node_id)
                    if not left:
                        settled.set()

        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as replicas:
                for node_id in fresh:
                    (replicas if node_id in replica_set else nursery).start_soon(connect, node_id)
            if wait_all or not left:
                return
            if not any(n in self._sources for n in replica_set + providers):
                await settled.wait()
            nursery.cancel_scope.cancel()
