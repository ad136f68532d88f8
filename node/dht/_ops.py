"""Iterative operations over the network (specs/dht.md §6 Iterative lookup, §7 Records).

Every network-wide operation is one run of the pure ``Lookup`` state machine:
this module only sends the requests it asks for, with a deadline each, and
feeds the replies back.  ``find_node`` drives plain lookups and bootstrap;
``mu_get_providers`` drives provider searches and collects announce tokens
for ``mu_announce``.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from node.dht._neighbours import Neighbours
from node.dht._rpc import RpcClient
from protocol.identity import Identity
from protocol.kademlia.ids import ALPHA, K, Contact, check_id
from protocol.kademlia.lookup import SOFT_TIMEOUT_SHARE, Lookup
from protocol.kademlia.routing import BUCKET_REFRESH_INTERVAL
from protocol.kademlia.records import DEFAULT_PROVIDER_TTL, MAX_PROVIDER_TTL, ContactRecord, ProviderRecord
from protocol.kademlia.storage import ProviderStore
from protocol.kademlia.wire import (
    FIND_NODE,
    MU_ANNOUNCE,
    MU_CONTACT,
    MU_GET_PROVIDERS,
    ErrorCode,
    RemoteProtocolError,
    parse_contacts,
)

log = logging.getLogger("mu.dht")

#: Keys this node announces itself as provider for, republished (specs/dht.md §7.1).
MAX_OWN_PROVIDED_KEYS = 65536
#: Provider records kept from one ``get_providers`` search.
MAX_PROVIDERS_PER_SEARCH = 64
#: Verified contact records kept in memory.
MAX_CONTACT_RECORDS = 1024
#: Saved contacts pinged at once when rejoining at start-up (specs/dht.md §5.4 Refresh and bootstrap).
MAX_REJOIN_PINGS = 64
#: Seconds before the bootstrap peers are tried again while the table is empty; doubled up to the maximum.
REJOIN_RETRY_INTERVAL = 2.0
MAX_REJOIN_RETRY_INTERVAL = 60.0

_Handler = Callable[[Contact, object], list[Contact]]


@dataclass(frozen=True, slots=True)
class Announcement:
    """What ``announce_provider`` did: the record and the nodes that took it."""

    record: ProviderRecord
    stored_at: list[Contact]


@dataclass(frozen=True, slots=True)
class NodesFound:
    """What one node lookup found: the k closest that answered, and the slow requests it ended without.

    ``slow`` nodes were asked and had neither answered nor timed out when the
    lookup ended (specs/dht.md §6 "Slow requests"): live or dead, unknown.
    """

    contacts: list[Contact]
    slow: int


@dataclass(slots=True)
class _Provided:
    host: str
    tcp_port: int
    terms: dict[str, object]
    ttl: int
    expires_at: int


class DhtOps:
    """Lookups, bootstrap, refresh, provider and contact records for one ``DhtNode``.

    Args:
        identity: signs our provider records.
        contact_record: our own contact record (its host and TCP port are our
            provider records' defaults).
        bound_host: the address our UDP socket is bound to (its family is the
            one we resolve names in; it is the source of our own records).
        rpc: sends the requests.
        neighbours: the routing table lookups start from and feed.
        providers: the local provider store (our own records go there too).
        wall_clock: Unix time, for record expiry.
    """

    def __init__(self, *, identity: Identity, contact_record: ContactRecord, bound_host: str, rpc: RpcClient,
                 neighbours: Neighbours, providers: ProviderStore, wall_clock: Callable[[], float]) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.contact_record = contact_record
        self.bound_host = bound_host
        self.rpc = rpc
        self.neighbours = neighbours
        self.providers = providers
        self.wall_clock = wall_clock
        self._provided: dict[bytes, _Provided] = {}
        self._contact_records: dict[bytes, ContactRecord] = {}

    async def run_lookup(self, target: bytes, rpc: str, extra: list[object] | None = None,
                         on_reply: _Handler | None = None, *, soft: bool = False) -> Lookup:
        """Drive one ``Lookup`` of ``target`` with ``rpc(own_id, target, *extra)``.

        With ``soft``, a request past the soft timeout stops holding the
        lookup's end (specs/dht.md §6 Iterative lookup, "Slow requests");
        when the lookup ends it is abandoned, not failed: its node stays in
        the table, and the RPC client counts its address silent if nothing
        comes from it within the request timeout (:meth:`RpcClient.call`).
        Without, every request holds the end until answered or timed out:
        what must be exact (records, announces, refreshes) waits.
        """
        table = self.neighbours.table
        timeout = self.rpc.request_timeout
        lookup = Lookup(target, table.closest(target, K), own_id=self.node_id, timeout=timeout,
                        soft_timeout=timeout * SOFT_TIMEOUT_SHARE if soft else None)
        send, receive = trio.open_memory_channel[tuple[Contact, object]](ALPHA * 4)
        args: list[object] = [self.node_id, target, *(extra or [])]

        async def ask(contact: Contact) -> None:
            try:
                value: object = await self.rpc.call(contact.address, rpc, args)
            except Exception as exc:  # NoReply, and anything the socket throws
                value = exc
            await send.send((contact, value))

        async with trio.open_nursery() as nursery:
            while True:
                for contact in lookup.next_requests(trio.current_time()):
                    nursery.start_soon(ask, contact)
                if lookup.done or not lookup.in_flight:
                    break
                deadline = lookup.next_deadline()
                received: tuple[Contact, object] | None = None
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    received = await receive.receive()
                if received is None:
                    continue  # a request turned slow or failed: next_requests counts it
                contact, value = received
                if isinstance(value, Exception):
                    lookup.on_failure(contact.node_id)
                    table.remove(contact.node_id)
                    continue
                try:
                    found = on_reply(contact, value) if on_reply else parse_contacts(value)
                except RemoteProtocolError as exc:
                    log.warning("bad %s reply from %s:%d: %s", rpc, contact.host, contact.port, exc)
                    lookup.on_failure(contact.node_id)
                    continue
                lookup.on_response(contact.node_id, found)
                self.neighbours.answered(contact)
            nursery.cancel_scope.cancel()
        table.touch_bucket(target, trio.current_time())
        return lookup

    async def lookup(self, key: bytes) -> list[Contact]:
        return (await self.find_nodes(key)).contacts

    async def find_nodes(self, key: bytes, *, soft: bool = False) -> NodesFound:
        check_id(key, "lookup key")
        lookup = await self.run_lookup(key, FIND_NODE, soft=soft)
        return NodesFound(lookup.result(), len(lookup.slow))

    async def bootstrap(self, addresses: list[tuple[str, int]]) -> list[Contact]:
        """Ping each address, look up our own ID, then refresh every bucket."""

        async def greet(address: tuple[str, int]) -> None:
            try:
                # Replies are matched by source address, so names become IPs first.
                family = trio.socket.AF_INET6 if ":" in self.bound_host else trio.socket.AF_INET
                info = await trio.socket.getaddrinfo(address[0], address[1], family=family,
                                                     type=trio.socket.SOCK_DGRAM)
                address = (str(info[0][4][0]), int(info[0][4][1]))
                node_id = await self.rpc.ping(address)
            except Exception as exc:
                log.warning("bootstrap contact %s:%d did not answer: %s", address[0], address[1], exc)
                return
            if node_id != self.node_id:
                self.neighbours.answered(Contact(node_id, address[0], address[1]))

        async with trio.open_nursery() as nursery:
            for address in addresses:
                nursery.start_soon(greet, address)
        closest = await self.lookup(self.node_id)
        await self.refresh(force=True)
        return closest

    async def rejoin(self, bootstrap: list[tuple[str, int]]) -> list[Contact]:
        """Rejoin after a start: ping the saved contacts, else fall back to ``bootstrap``.

        Saved contacts that do not answer with their ID (each ping bounded by
        the request timeout) leave the table.  If any answered, our own ID is
        looked up through them; if none did, the network is joined through
        ``bootstrap``, tried again with growing pauses while the table stays
        empty (specs/dht.md §5.4 Refresh and bootstrap).  Run it after the
        node listens: nothing waits for it.
        """
        table = self.neighbours.table
        saved = table.contacts()
        alive = 0
        slots = trio.Semaphore(MAX_REJOIN_PINGS)

        async def check(contact: Contact) -> None:
            nonlocal alive
            async with slots:
                node_id = await self.neighbours.ping(contact.address)
            if node_id == contact.node_id:
                alive += 1
                table.seen(contact.node_id, trio.current_time())
            else:
                table.remove(contact.node_id)

        async with trio.open_nursery() as nursery:
            for contact in saved:
                nursery.start_soon(check, contact)
        log.info("rejoin: %d of %d saved contacts answered", alive, len(saved))
        if alive:
            return await self.lookup(self.node_id)
        if not bootstrap:
            log.warning("no saved contact answered and no bootstrap peers: waiting to be contacted")
            return []
        pause = REJOIN_RETRY_INTERVAL
        while True:
            closest = await self.bootstrap(bootstrap)
            if len(table):
                return closest
            log.warning("no bootstrap peer answered; trying again in %.0f s", pause)
            await trio.sleep(pause)
            pause = min(pause * 2, MAX_REJOIN_RETRY_INTERVAL)

    async def refresh(self, *, force: bool = False) -> int:
        """Look up a random ID in each stale bucket (Kademlia §2.3)."""
        table = self.neighbours.table
        stale = table.stale_buckets(trio.current_time(), 0.0 if force else BUCKET_REFRESH_INTERVAL)
        for index in stale:
            await self.run_lookup(table.id_in_bucket(index, secrets.token_bytes(20)), FIND_NODE)
        return len(stale)

    # -- provider records (specs/dht.md §7.1) ------------------------------

    async def announce_provider(self, key: bytes, *, tcp_port: int | None = None, host: str | None = None,
                                terms: Mapping[str, object] | None = None,
                                ttl: int = DEFAULT_PROVIDER_TTL) -> Announcement:
        """Sign a provider record for ``key`` and store it on the k closest mu nodes.

        The record is also kept locally and republished by maintenance at half
        its lifetime until ``withdraw_provider``.
        """
        check_id(key, "key")
        if not 0 < ttl <= MAX_PROVIDER_TTL:
            raise ValueError(f"ttl must be in 1..{MAX_PROVIDER_TTL} seconds")
        own = self.contact_record
        if key not in self._provided and len(self._provided) >= MAX_OWN_PROVIDED_KEYS:
            raise ValueError(f"already providing {MAX_OWN_PROVIDED_KEYS} keys")
        expires_at = int(self.wall_clock()) + ttl
        provided = _Provided(host or own.host, tcp_port or own.tcp_port, dict(terms or {}), ttl, expires_at)
        record = ProviderRecord.create(self.identity, key=key, host=provided.host, tcp_port=provided.tcp_port,
                                       terms=provided.terms, expires_at=expires_at)
        self._provided[key] = provided
        self.providers.add(record, self.bound_host, self.wall_clock())
        tokens: dict[bytes, bytes] = {}

        def keep_token(contact: Contact, value: object) -> list[Contact]:
            nodes, _, token = _parse_providers_reply(value)
            tokens[contact.node_id] = token
            return nodes

        lookup = await self.run_lookup(key, MU_GET_PROVIDERS, on_reply=keep_token)
        stored: list[Contact] = []

        async def announce(contact: Contact) -> None:
            try:
                reply = await self.rpc.call(contact.address, MU_ANNOUNCE,
                                            [self.node_id, key, tokens[contact.node_id], record.serialize()])
            except Exception as exc:
                log.info("announce to %s:%d failed: %s", contact.host, contact.port, exc)
                return
            if reply is True:
                stored.append(contact)
            else:
                log.warning("%s:%d refused our provider record: %r", contact.host, contact.port, reply)

        async with trio.open_nursery() as nursery:
            for contact in lookup.result():
                nursery.start_soon(announce, contact)
        return Announcement(record, stored)

    def withdraw_provider(self, key: bytes) -> None:
        """Stop republishing ``key`` (records already out expire on their own)."""
        self._provided.pop(key, None)

    async def republish(self) -> int:
        """Re-announce our records that are past half their lifetime."""
        now = self.wall_clock()
        due = [k for k, p in self._provided.items() if p.expires_at - now <= p.ttl / 2]
        for key in due:
            p = self._provided[key]
            await self.announce_provider(key, tcp_port=p.tcp_port, host=p.host, terms=p.terms, ttl=p.ttl)
        return len(due)

    async def get_providers(self, key: bytes, *, soft: bool = False) -> list[ProviderRecord]:
        """Live provider records for ``key``: ours, plus every verified one the lookup meets.

        ``soft``: the lookup may end without its slow requests (specs/dht.md §6).
        """
        check_id(key, "key")
        found: dict[bytes, ProviderRecord] = {r.node_id: r for r in self.providers.get(key, self.wall_clock())}

        def collect(contact: Contact, value: object) -> list[Contact]:
            nodes, records, _ = _parse_providers_reply(value)
            for data in records:
                try:
                    record = ProviderRecord.parse(data, now=self.wall_clock())
                    if record.key != key:
                        raise RemoteProtocolError(ErrorCode.BAD_ARGUMENTS, "record for another key")
                except RemoteProtocolError as exc:
                    log.warning("dropping provider record from %s:%d: %s", contact.host, contact.port, exc)
                    continue
                old = found.get(record.node_id)
                if (old is None and len(found) < MAX_PROVIDERS_PER_SEARCH) or (old and old.expires_at < record.expires_at):
                    found[record.node_id] = record
            return nodes

        await self.run_lookup(key, MU_GET_PROVIDERS, on_reply=collect, soft=soft)
        return sorted(found.values(), key=lambda r: r.expires_at, reverse=True)

    # -- contact records (specs/dht.md §7.2) -------------------------------

    async def get_contact(self, node_id: bytes) -> ContactRecord | None:
        """Find ``node_id`` and fetch its signed contact record; None if unreachable or not mu."""
        check_id(node_id)
        if node_id == self.node_id:
            return self.contact_record
        cached = self._contact_records.get(node_id)
        if cached is not None:
            return cached
        contact = self.neighbours.table.get(node_id)
        if contact is None:
            contact = next((c for c in await self.lookup(node_id) if c.node_id == node_id), None)
        if contact is None:
            return None
        try:
            record = ContactRecord.parse(await self.rpc.call(contact.address, MU_CONTACT, [self.node_id]))
        except RemoteProtocolError as exc:
            log.warning("bad contact record from %s:%d: %s", contact.host, contact.port, exc)
            return None
        except Exception as exc:
            log.info("%s:%d gave no contact record (plain kademlia node?): %s", contact.host, contact.port, exc)
            return None
        if record.node_id != node_id:
            log.warning("contact record from %s:%d is for another node id", contact.host, contact.port)
            return None
        self._remember_contact_record(record)
        self.neighbours.answered(Contact(node_id, contact.host, contact.port, record.public_key))
        return record

    def forget_contact(self, node_id: bytes) -> None:
        self._contact_records.pop(node_id, None)

    def _remember_contact_record(self, record: ContactRecord) -> None:
        """Cache a verified contact record (bounded, oldest dropped first)."""
        self._contact_records.pop(record.node_id, None)
        self._contact_records[record.node_id] = record
        while len(self._contact_records) > MAX_CONTACT_RECORDS:
            del self._contact_records[next(iter(self._contact_records))]


def _parse_providers_reply(value: object) -> tuple[list[Contact], list[object], bytes]:
    """A ``mu_get_providers`` reply: ``{"token", "providers", "nodes"}``."""
    if not isinstance(value, dict) or set(value) != {"token", "providers", "nodes"}:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "mu_get_providers reply is not {token, providers, nodes}")
    token, records = value["token"], value["providers"]
    if not isinstance(token, bytes) or not isinstance(records, list):
        raise RemoteProtocolError(ErrorCode.MALFORMED, "mu_get_providers token or providers malformed")
    return parse_contacts(value["nodes"]), records, token
