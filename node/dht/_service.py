"""The DHT service: one UDP socket on trio speaking rpcudp (specs/dht.md §4).

``open_dht`` binds the socket, loads the saved routing table, and runs two
tasks until the context exits: the receive loop, which answers requests
inline and wakes the callers of outstanding requests, and the maintenance
loop (token rotation, expiry, bucket refresh, provider republish, table
saves).  Every outgoing request has a deadline; every table and store is
bounded (specs/dht.md §2).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from node.dht._handlers import RequestHandlers
from node.dht._ops import Announcement, DhtOps
from node.dht._persist import load_table, save_table
from protocol.identity import Identity
from protocol.kademlia.ids import Contact
from protocol.kademlia.records import DEFAULT_PROVIDER_TTL, ContactInfo, ContactRecord, ProviderRecord
from protocol.kademlia.routing import RoutingTable
from protocol.kademlia.storage import ProviderStore, ValueStore
from protocol.kademlia.wire import (
    MAX_DATAGRAM_SIZE,
    MESSAGE_ID_SIZE,
    PING,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    decode_datagram,
    encode_request,
    parse_node_id_reply,
)

log = logging.getLogger("mu.dht")

#: Requests of ours awaiting a reply at once (specs/dht.md §2).
MAX_OUTSTANDING_REQUESTS = 1024
#: Ping-before-evict probes running at once; further ones are skipped.
MAX_EVICTION_PINGS = 16
#: Verified contact records kept in memory.
MAX_CONTACT_RECORDS = 1024
#: Seconds between maintenance passes.
MAINTENANCE_INTERVAL = 60.0
#: Seconds a token secret is current; tokens verify under it and the next one.
TOKEN_ROTATION_INTERVAL = 300.0
#: Seconds between routing-table saves while running.
SAVE_INTERVAL = 600.0


class NoReply(Exception):
    """A request timed out or its reply could not be parsed."""


@dataclass(slots=True)
class _Pending:
    address: tuple[str, int]
    done: trio.Event
    value: object = None


class DhtNode:
    """A running DHT node; build it with ``open_dht``."""

    def __init__(self, identity: Identity, sock: trio.socket.SocketType, data_dir: Path | None,
                 contact: ContactInfo | None, *, request_timeout: float,
                 values: ValueStore | None = None, providers: ProviderStore | None = None,
                 table: RoutingTable | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.host: str = host
        self.port: int = port
        self.data_dir = data_dir
        self.request_timeout = request_timeout
        self._wall_clock = wall_clock
        self.table = table or RoutingTable(self.node_id)
        self.values = values or ValueStore()
        self.providers = providers or ProviderStore()
        info = contact or ContactInfo(tcp_port=port)
        self.contact_record = ContactRecord.create(identity, host=host, udp_port=port, info=info,
                                                   issued_at=int(wall_clock()))
        self.contact_records: dict[bytes, ContactRecord] = {}
        self.token_secrets = [secrets.token_bytes(32), secrets.token_bytes(32)]
        self._pending: dict[bytes, _Pending] = {}
        self._evictions = 0
        self._nursery: trio.Nursery | None = None
        self.handlers = RequestHandlers(self)
        self.ops = DhtOps(self)

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

    async def get_providers(self, key: bytes) -> list[ProviderRecord]:
        """Verified, live provider records for ``key`` from the network and ourselves."""
        return await self.ops.get_providers(key)

    async def get_contact(self, node_id: bytes) -> ContactRecord | None:
        """The verified contact record of ``node_id``, or None if it cannot be reached."""
        return await self.ops.get_contact(node_id)

    async def refresh(self) -> int:
        """Refresh stale buckets with lookups of random IDs in them; return how many."""
        return await self.ops.refresh()

    def save(self) -> None:
        """Write the routing table to the data dir now (blocking, small)."""
        if self.data_dir is not None:
            save_table(self.data_dir, self.node_id, self.table.contacts())

    # -- requests --------------------------------------------------------

    async def call(self, address: tuple[str, int], name: str, args: list[object]) -> object:
        """Send ``name(*args)`` to ``address`` and return the reply value.

        Raises:
            NoReply: no reply within ``request_timeout`` or too many requests pending.
        """
        if len(self._pending) >= MAX_OUTSTANDING_REQUESTS:
            raise NoReply(f"{MAX_OUTSTANDING_REQUESTS} requests already outstanding")
        msg_id = secrets.token_bytes(MESSAGE_ID_SIZE)
        try:
            datagram = encode_request(msg_id, name, args)
        except LocalProtocolError as exc:
            raise NoReply(str(exc)) from None
        pending = _Pending(address, trio.Event())
        self._pending[msg_id] = pending
        try:
            try:
                await self.sock.sendto(datagram, address)
            except OSError as exc:
                raise NoReply(f"send to {address} failed: {exc}") from None
            with trio.move_on_after(self.request_timeout):
                await pending.done.wait()
        finally:
            del self._pending[msg_id]
        if not pending.done.is_set():
            raise NoReply(f"{name} to {address[0]}:{address[1]} timed out")
        return pending.value

    async def ping(self, address: tuple[str, int]) -> bytes:
        """Ping ``address``; return its node ID (NoReply on failure)."""
        value = await self.call(address, PING, [self.node_id])
        try:
            return parse_node_id_reply(value)
        except RemoteProtocolError as exc:
            raise NoReply(str(exc)) from None

    def heard_from(self, contact: Contact) -> None:
        """Note a live contact in the table, pinging the bucket head if it is full."""
        result = self.table.add(contact, self.now())
        if result.ping is None or self._nursery is None:
            return
        if self._evictions >= MAX_EVICTION_PINGS:
            # Too many probes running: let the head stay (it is the safe choice).
            self.table.seen(result.ping.node_id, self.now())
            return
        self._evictions += 1
        self._nursery.start_soon(self._ping_head, result.ping)

    async def _ping_head(self, head: Contact) -> None:
        try:
            node_id = await self.ping(head.address)
        except NoReply:
            node_id = b""
        finally:
            self._evictions -= 1
        if node_id == head.node_id:
            self.table.seen(head.node_id, self.now())
        else:
            log.info("evicting unresponsive contact %s at %s:%d", head.node_id.hex(), head.host, head.port)
            self.table.remove(head.node_id)

    def remember_contact_record(self, record: ContactRecord) -> None:
        """Cache a verified contact record (bounded, oldest dropped first)."""
        self.contact_records.pop(record.node_id, None)
        self.contact_records[record.node_id] = record
        while len(self.contact_records) > MAX_CONTACT_RECORDS:
            del self.contact_records[next(iter(self.contact_records))]

    # -- tasks -----------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the receive and maintenance loops until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._maintain)
            task_status.started()
            await self._receive_loop()

    async def _receive_loop(self) -> None:
        while True:
            try:
                data, address = await self.sock.recvfrom(MAX_DATAGRAM_SIZE + 1)
            except OSError as exc:
                # ICMP port-unreachable surfaces here on some systems: not fatal.
                log.debug("recvfrom error: %s", exc)
                continue
            address = (address[0], address[1])
            try:
                message = decode_datagram(data)
            except RemoteProtocolError as exc:
                log.warning("dropping datagram from %s:%d: %s", address[0], address[1], exc)
                continue
            if isinstance(message, Response):
                self._on_response(message, address)
            else:
                await self._on_request(message, address)

    def _on_response(self, message: Response, address: tuple[str, int]) -> None:
        pending = self._pending.get(message.msg_id)
        if pending is None or pending.address != address or pending.done.is_set():
            log.warning("dropping unsolicited response from %s:%d", address[0], address[1])
            return
        pending.value = message.value
        pending.done.set()

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
            await self.sock.sendto(reply, address)
        except OSError as exc:
            log.debug("reply to %s failed: %s", address, exc)

    async def _maintain(self) -> None:
        last_rotation = last_save = self.now()
        while True:
            await trio.sleep(MAINTENANCE_INTERVAL)
            now = self.now()
            if now - last_rotation >= TOKEN_ROTATION_INTERVAL:
                self.token_secrets = [secrets.token_bytes(32), self.token_secrets[0]]
                last_rotation = now
            wall = self.wall_now()
            self.values.expire(wall)
            self.providers.expire(wall)
            try:
                await self.ops.republish()
                await self.ops.refresh()
                if self.data_dir is not None and now - last_save >= SAVE_INTERVAL:
                    await trio.to_thread.run_sync(self.save)
                    last_save = now
            except (OSError, ValueError) as exc:
                # A full disk or a bad saved setting must not stop the node answering.
                log.error("maintenance pass failed: %s", exc)


def open_table(identity: Identity, data_dir: Path | None) -> RoutingTable:
    """A routing table for ``identity``, seeded from the data dir's saved table if any."""
    table = RoutingTable(identity.node_id)
    if data_dir is not None:
        table.add_all(load_table(data_dir, identity.node_id), trio.current_time())
    return table
