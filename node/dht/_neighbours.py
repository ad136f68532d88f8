"""The routing table kept live (specs/dht.md §5.2 Adding a contact, §5.3 Address limits).

A contact enters the table only after it answered a request of ours
(S/Kademlia: a node proves its address by answering at it).  A request from
a sender we do not know starts a ping to its address instead; whoever
answers that ping enters.  When a bucket is full, its least recently seen
contact is pinged and evicted only if it does not answer (Kademlia §2.2: old
live contacts are kept over new ones); when a new ID shows up at an IP:port
another contact holds, or a known ID answers at another IP:port (a node
restarted on a new port), the held contact is pinged and replaced only if it fails.
Those probes run in the node's nursery, each kind bounded in number.
"""

from __future__ import annotations

import logging

import trio

from node.dht._rpc import NoReply, RpcClient
from protocol.kademlia.ids import Contact, KademliaError
from protocol.kademlia.routing import AddStatus, RoutingTable

log = logging.getLogger("mu.dht")

#: Ping-before-evict and address-holder probes running at once; further ones are skipped.
MAX_EVICTION_PINGS = 16
#: Pings to unknown requesters running at once; further requesters are not pinged.
MAX_VERIFY_PINGS = 16


class Neighbours:
    """The routing table and the pings that guard it.

    Args:
        table: the routing table (read directly by lookups and handlers).
        rpc: what pings requesters, full buckets' heads and address holders.
    """

    def __init__(self, table: RoutingTable, rpc: RpcClient) -> None:
        self.table = table
        self._rpc = rpc
        self._evictions = 0
        self._verifying: set[tuple[str, int]] = set()
        self._nursery: trio.Nursery | None = None

    def probe_in(self, nursery: trio.Nursery) -> None:
        """Run probes in ``nursery`` from now on (before, nothing is pinged and a full bucket keeps its head)."""
        self._nursery = nursery

    def answered(self, contact: Contact) -> None:
        """``contact`` answered a request of ours: note it in the table, pinging whoever it would displace."""
        now = trio.current_time()
        result = self.table.add(contact, now)
        if result.ping is None:
            return
        taken = result.status in (AddStatus.ADDRESS_TAKEN, AddStatus.MOVED)
        if self._nursery is None or self._evictions >= MAX_EVICTION_PINGS:
            # No probe now: the contact already there stays (the safe choice).
            if not taken:
                self.table.seen(result.ping.node_id, now)
            return
        self._evictions += 1
        self._nursery.start_soon(self._probe, result.ping, contact if taken else None)

    def asked_by(self, contact: Contact) -> None:
        """``contact`` sent us a well-formed request: a known contact is refreshed, an unknown one pinged."""
        known = self.table.get(contact.node_id)
        if known is not None and known.address == contact.address:
            self.table.seen(contact.node_id, trio.current_time())
            return
        if (self._nursery is None or contact.address in self._verifying
                or len(self._verifying) >= MAX_VERIFY_PINGS):
            return
        self._verifying.add(contact.address)
        self._nursery.start_soon(self._verify, contact.address)

    async def ping(self, address: tuple[str, int]) -> bytes:
        """Ping ``address``; return the node ID that answered, or b"" if none did."""
        try:
            return await self._rpc.ping(address)
        except NoReply:
            return b""

    async def _verify(self, address: tuple[str, int]) -> None:
        try:
            node_id = await self.ping(address)
        finally:
            self._verifying.discard(address)
        if not node_id:
            return
        try:
            self.answered(Contact(node_id, address[0], address[1]))
        except KademliaError as exc:
            log.info("not adding %s:%d: %s", address[0], address[1], exc)

    async def _probe(self, held: Contact, newcomer: Contact | None) -> None:
        try:
            node_id = await self.ping(held.address)
        finally:
            self._evictions -= 1
        if node_id == held.node_id:
            self.table.seen(held.node_id, trio.current_time())
            return
        log.info("evicting unresponsive contact %s at %s:%d", held.node_id.hex(), held.host, held.port)
        self.table.remove(held.node_id)
        if newcomer is not None:
            self.answered(newcomer)
