"""Finding and dialling the nodes that hold a chunk (specs/network.md §3, §7).

Holders of a chunk are the R nodes XOR-closest to its DHT key (placement,
found by a DHT lookup for that key) plus the providers of the file's root
(nodes that announced they hold the whole file: its uploader, nodes that
pinned it).  A node is dialled at the TCP port of its signed DHT contact
record (or provider record); sessions are cached per node, and a node that
could not be reached is not dialled again for the same operation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from node.dht import DhtNode
from node.files.fetcher import ChunkSource, SessionSource
from node.transport import Session, Transport, TransportError
from protocol.fetch import DEFAULT_REPLICAS, dht_key, placement

log = logging.getLogger("mu.locate")

# Nodes one operation may dial at most (bounds the session cache).
MAX_DIALLED = 256
DIAL_TIMEOUT = 10.0


def price_from_hello(session: Session) -> int:
    """The host's retrieval price in sats/MiB from its HELLO terms (0 if it states none)."""
    value = session.peer_hello.terms.get("price_per_mib_get", 0)
    return value if isinstance(value, int) and value >= 0 else 0


class PeerDialer:
    """Dials nodes by node ID through their DHT contact records, caching sessions."""

    def __init__(self, dht: DhtNode, transport: Transport) -> None:
        self.dht = dht
        self.transport = transport
        self._sessions: dict[bytes, Session] = {}
        self._unreachable: set[bytes] = set()
        self._addresses: dict[bytes, tuple[str, int]] = {}

    def learn(self, node_id: bytes, host: str, tcp_port: int) -> None:
        """Remember where a node listens (from a provider record)."""
        self._addresses.setdefault(node_id, (host, tcp_port))

    async def session(self, node_id: bytes) -> Session | None:
        """An open session to ``node_id``, or None if it cannot be reached."""
        cached = self._sessions.get(node_id)
        if cached is not None and cached.is_open:
            return cached
        if node_id in self._unreachable or len(self._sessions) + len(self._unreachable) >= MAX_DIALLED:
            return None
        address = self._addresses.get(node_id)
        if address is None:
            record = await self.dht.get_contact(node_id)
            if record is None:
                self._unreachable.add(node_id)
                return None
            address = (record.host, record.tcp_port)
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                session = await self.transport.connect(node_id, *address)
        except (TransportError, OSError, trio.TooSlowError) as exc:
            log.info("cannot reach %s at %s:%d: %s", node_id.hex(), address[0], address[1], exc)
            self._unreachable.add(node_id)
            return None
        self._sessions[node_id] = session
        return session

    async def closest_nodes(self, address: bytes, count: int) -> list[bytes]:
        """Node IDs of other nodes closest to the chunk's DHT key, closest first (up to ``count``).

        Plain ``kademlia`` nodes may be among them; they have no contact
        record, so :meth:`session` reports them unreachable and callers move on.
        """
        contacts = await self.dht.lookup(dht_key(address))
        own = self.dht.node_id
        ids = [c.node_id for c in contacts if c.node_id != own]
        return placement(address, ids, min(count, 20)) if ids else []


SourceFactory = Callable[[Session], Awaitable[ChunkSource]]


async def free_source(session: Session) -> ChunkSource:
    """A source asking without payment (hosts serving within their free allowance)."""
    return SessionSource(session, price_from_hello(session))


class DhtResolver:
    """Holders of each chunk of one file, as :class:`ChunkSource` objects for the fetcher.

    ``make_source`` turns a session into a source: :func:`free_source`, or a
    paying one (node/exchange/paying.py).  A host it refuses (e.g. priced above our
    maximum) is left out.
    """

    def __init__(self, dialer: PeerDialer, root: bytes, *, replicas: int = DEFAULT_REPLICAS,
                 make_source: SourceFactory = free_source) -> None:
        self.dialer = dialer
        self.root = root
        self.replicas = replicas
        self.make_source = make_source
        self._providers: list[bytes] | None = None
        self._sources: dict[bytes, ChunkSource] = {}
        self._refused: set[bytes] = set()

    async def _root_providers(self) -> list[bytes]:
        if self._providers is None:
            records = await self.dialer.dht.get_providers(dht_key(self.root))
            own = self.dialer.dht.node_id
            self._providers = []
            for record in records:
                if record.node_id != own:
                    self.dialer.learn(record.node_id, record.host, record.tcp_port)
                    self._providers.append(record.node_id)
        return self._providers

    async def holders(self, address: bytes) -> list[ChunkSource]:
        """Sources for ``address``: its replica set, then the root's providers."""
        ids = await self.dialer.closest_nodes(address, self.replicas)
        ids += [p for p in await self._root_providers() if p not in ids]
        out: list[ChunkSource] = []
        for node_id in ids:
            source = self._sources.get(node_id)
            if source is None and node_id not in self._refused:
                session = await self.dialer.session(node_id)
                if session is None:
                    continue
                try:
                    source = await self.make_source(session)
                except Exception as exc:  # terms unreadable or too expensive: not a candidate
                    log.info("not using %s: %s", node_id.hex(), exc)
                    self._refused.add(node_id)
                    continue
                self._sources[node_id] = source
            if source is not None:
                out.append(source)
        return out
