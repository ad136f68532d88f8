"""The DHT service: one UDP socket on trio speaking rpcudp (specs/dht.md §4 Wire format).

``open_dht`` binds the socket, loads the saved routing table, and runs two
tasks until the context exits: the receive loop, which answers requests
inline and wakes the callers of outstanding requests, and the maintenance
loop (token rotation, expiry, bucket refresh, provider republish, table
saves).  Every outgoing request has a deadline; every table and store is
bounded (specs/dht.md §2 Conventions and definitions).

``DhtNode`` owns its parts and hands each the pieces it uses: the
:class:`RpcClient` (our requests), :class:`Neighbours` (the routing table and
its eviction probes), :class:`RequestHandlers` (answers) and :class:`DhtOps`
(lookups and records).  None of them holds the node.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from node.dht._handlers import AnnounceTokens, RequestHandlers
from node.dht._mutable import MutableOps
from node.dht._neighbours import Neighbours
from node.dht._ops import Announcement, DhtOps, NodesFound
from node.dht._persist import load_table, save_table
from node.dht._rpc import RpcClient
from protocol.identity import Identity
from protocol.kademlia.ids import Contact
from protocol.kademlia.mutable import MutableRecord, MutableStore
from protocol.kademlia.records import DEFAULT_PROVIDER_TTL, ContactInfo, ContactRecord, ProviderRecord
from protocol.kademlia.routing import RoutingTable
from protocol.kademlia.storage import ProviderStore, ValueStore
from protocol.kademlia.wire import MAX_DATAGRAM_SIZE, RemoteProtocolError, Request, Response, decode_datagram

log = logging.getLogger("mu.dht")

#: Seconds between maintenance passes.
MAINTENANCE_INTERVAL = 60.0
#: Seconds a token secret is current; tokens verify under it and the next one.
TOKEN_ROTATION_INTERVAL = 300.0
#: Seconds between routing-table saves while running.
SAVE_INTERVAL = 600.0


class DhtNode:
    """A running DHT node; build it with ``open_dht``."""

    def __init__(self, identity: Identity, sock: trio.socket.SocketType, data_dir: Path | None,
                 contact: ContactInfo | None, *, request_timeout: float,
                 values: ValueStore | None = None, providers: ProviderStore | None = None,
                 records: MutableStore | None = None, table: RoutingTable | None = None, wall_clock: Callable[[], float] = time.time,
                 errors: socket.socket | None = None) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.host: str = host
        self.port: int = port
        self.data_dir = data_dir
        self._wall_clock = wall_clock
        self.table = table if table is not None else RoutingTable(self.node_id)
        self.values = values or ValueStore()
        self.providers = providers or ProviderStore()
        self.records = records if records is not None else MutableStore()
        info = contact or ContactInfo(tcp_port=port)
        self.contact_record = ContactRecord.create(identity, host=host, udp_port=port, info=info,
                                                   issued_at=int(wall_clock()))
        self.tokens = AnnounceTokens()
        self.rpc = RpcClient(sock, self.node_id, request_timeout, errors=errors)
        self.neighbours = Neighbours(self.table, self.rpc)
        self.handlers = RequestHandlers(node_id=self.node_id, contact_record=self.contact_record,
                                        neighbours=self.neighbours, values=self.values, providers=self.providers,
                                        records=self.records, tokens=self.tokens, wall_clock=wall_clock)
        self.ops = DhtOps(identity=identity, contact_record=self.contact_record, bound_host=host, rpc=self.rpc,
                          neighbours=self.neighbours, providers=self.providers, wall_clock=wall_clock)
        self.mutable = MutableOps(ops=self.ops, rpc=self.rpc, records=self.records, bound_host=host,
                                  wall_clock=wall_clock)

    # -- time ------------------------------------------------------------

    def wall_now(self) -> float:
        """Unix time, for record expiry (records carry absolute times)."""
        return self._wall_clock()

    @staticmethod
    def now() -> float:
        """trio's clock, for the routing table and request deadlines."""
        return trio.current_time()

    # -- public API (re-exported by node.dht) ------------------------------

    async def bootstrap(self, addresses: list[tuple[str, int]]) -> list[Contact]:
        """Join the network through ``addresses``; return the k closest to us found."""
        return await self.ops.bootstrap(addresses)

    async def lookup(self, key: bytes) -> list[Contact]:
        """The k closest live nodes to ``key`` (iterative lookup, specs/dht.md §6)."""
        return await self.ops.lookup(key)

    async def find_nodes(self, key: bytes, *, soft: bool = False) -> NodesFound:
        """As :meth:`lookup`, with how many slow requests the lookup ended without (specs/dht.md §6).

        ``soft``: a request past ``SOFT_TIMEOUT`` stops holding the lookup's end.
        """
        return await self.ops.find_nodes(key, soft=soft)

    async def announce_provider(self, key: bytes, *, tcp_port: int | None = None, host: str | None = None,
                                terms: Mapping[str, object] | None = None,
                                ttl: int = DEFAULT_PROVIDER_TTL) -> Announcement:
        """Sign a provider record for ``key`` and store it on the k closest mu nodes.

        ``tcp_port`` and ``host`` default to our contact record's; ``terms`` is
        the payment-terms map (specs/dht.md §7.1).  The record is republished
        at half its ``ttl`` until ``withdraw_provider(key)``.

        Raises:
            ValueError: a field breaks a bound of specs/dht.md §7.1.
        """
        return await self.ops.announce_provider(key, tcp_port=tcp_port, host=host, terms=terms, ttl=ttl)

    def withdraw_provider(self, key: bytes) -> None:
        """Stop republishing our provider record for ``key``."""
        self.ops.withdraw_provider(key)

    async def get_providers(self, key: bytes, *, soft: bool = False) -> list[ProviderRecord]:
        """Verified, live provider records for ``key`` from the network and ourselves.

        ``soft``: a request past ``SOFT_TIMEOUT`` stops holding the lookup's end.
        """
        return await self.ops.get_providers(key, soft=soft)

    async def get_contact(self, node_id: bytes) -> ContactRecord | None:
        """The verified contact record of ``node_id``, or None if it cannot be reached."""
        return await self.ops.get_contact(node_id)

    def forget_contact(self, node_id: bytes) -> None:
        """Drop the cached contact record of ``node_id`` (its address failed): the next get fetches it anew."""
        self.ops.forget_contact(node_id)

    async def publish_record(self, record: MutableRecord) -> int:
        """Store a signed mutable record on the k closest nodes; return how many of them took it.

        The node keeps republishing it (specs/dht.md §7.3 Mutable record) until
        ``withdraw_record`` or a newer record of the same key is published.
        Nodes holding a higher sequence refuse it and do not count.

        Raises:
            ValueError: the record does not verify, or too many are published.
        """
        return await self.mutable.publish(record)

    async def resolve_record(self, public_key: bytes) -> MutableRecord | None:
        """The valid record of ``public_key`` with the highest sequence the k closest nodes hold, or None."""
        return await self.mutable.resolve(public_key)

    def withdraw_record(self, public_key: bytes) -> None:
        """Stop republishing the mutable record of ``public_key``."""
        self.mutable.withdraw(public_key)

    async def refresh(self) -> int:
        """Refresh stale buckets with lookups of random IDs in them; return how many."""
        return await self.ops.refresh()

    async def rejoin(self, bootstrap: list[tuple[str, int]]) -> list[Contact]:
        """Ping the saved contacts, dropping the dead; if none answered, join through ``bootstrap``.

        Start-up runs it in the background once the node listens (specs/dht.md §5.4).
        """
        return await self.ops.rejoin(bootstrap)

    def save(self) -> None:
        """Write the routing table to the data dir now (blocking, small)."""
        if self.data_dir is not None:
            save_table(self.data_dir, self.node_id, self.table.contacts())

    async def ping(self, address: tuple[str, int]) -> bytes:
        """Ping ``address``; return its node ID (``NoReply`` on failure)."""
        return await self.rpc.ping(address)

    # -- tasks -----------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the receive and maintenance loops until cancelled."""
        async with trio.open_nursery() as nursery:
            self.neighbours.probe_in(nursery)
            nursery.start_soon(self._maintain)
            task_status.started()
            await self._receive_loop()

    async def _receive_loop(self) -> None:
        while True:
            try:
                data, address = await self.sock.recvfrom(MAX_DATAGRAM_SIZE + 1)
            except OSError as exc:
                # An ICMP error (port unreachable) for a datagram of ours: not fatal.
                log.debug("recvfrom error: %s", exc)
                self.rpc.read_icmp_errors()
                continue
            address = (address[0], address[1])
            self.rpc.heard_from(address)
            try:
                message = decode_datagram(data)
            except RemoteProtocolError as exc:
                log.warning("dropping datagram from %s:%d: %s", address[0], address[1], exc)
                continue
            if isinstance(message, Response):
                self.rpc.on_response(message, address)
            else:
                await self._on_request(message, address)

    async def _on_request(self, request: Request, address: tuple[str, int]) -> None:
        try:
            reply = self.handlers.handle(request, address)
        except Exception:
            # A peer must never be able to stop the node: log our bug, drop the request.
            log.exception("internal error answering %r from %s:%d", request.name, address[0], address[1])
            return
        if reply is None:
            return
        try:
            await self.rpc.send(reply, address)
        except OSError as exc:
            log.debug("reply to %s failed: %s", address, exc)

    async def _maintain(self) -> None:
        last_rotation = last_save = self.now()
        while True:
            await trio.sleep(MAINTENANCE_INTERVAL)
            now = self.now()
            if now - last_rotation >= TOKEN_ROTATION_INTERVAL:
                self.tokens.rotate()
                last_rotation = now
            wall = self.wall_now()
            self.values.expire(wall)
            self.providers.expire(wall)
            self.records.expire(wall)
            try:
                await self.ops.republish()
                await self.mutable.republish()
                await self.ops.refresh()
                if self.data_dir is not None and now - last_save >= SAVE_INTERVAL:
                    await trio.to_thread.run_sync(self.save)
                    last_save = now
            except (OSError, ValueError) as exc:
                # A full disk or a bad saved setting must not stop the node answering.
                log.error("maintenance pass failed: %s", exc)


def open_table(identity: Identity, data_dir: Path | None, *, loopback_devnet: bool = False) -> RoutingTable:
    """A routing table for ``identity``, seeded from the data dir's saved table if any.

    The saved contacts all answered us in an earlier run; ``DhtNode.rejoin``
    pings them again and drops those that no longer answer.
    """
    table = RoutingTable(identity.node_id, loopback_devnet=loopback_devnet)
    if data_dir is not None:
        table.add_all(load_table(data_dir, identity.node_id), trio.current_time())
    return table
