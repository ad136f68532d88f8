"""The routing table kept live, with ping-before-evict (specs/dht.md §5.2 Adding a contact).

A contact is added on every well-formed request or reply.  When its bucket
is full, the bucket's least recently seen contact is pinged and evicted only
if it does not answer (Kademlia §2.2: old live contacts are kept over new
ones).  Those probes run in the node's nursery, at most
``MAX_EVICTION_PINGS`` at once.
"""

from __future__ import annotations

import logging

import trio

from node.dht._rpc import NoReply, RpcClient
from protocol.kademlia.ids import Contact
from protocol.kademlia.routing import RoutingTable

log = logging.getLogger("mu.dht")

#: Ping-before-evict probes running at once; further ones are skipped.
MAX_EVICTION_PINGS = 16


class Neighbours:
    """The routing table and its eviction probes.

    Args:
        table: the routing table (read directly by lookups and handlers).
        rpc: what pings a full bucket's head.
    """

    def __init__(self, table: RoutingTable, rpc: RpcClient) -> None:
        self.table = table
        self._rpc = rpc
        self._evictions = 0
        self._nursery: trio.Nursery | None = None

    def probe_in(self, nursery: trio.Nursery) -> None:
        """Run eviction probes in ``nursery`` from now on (before, a full bucket keeps its head)."""
        self._nursery = nursery

    def heard_from(self, contact: Contact) -> None:
        """Note a live contact in the table, pinging the bucket head if it is full."""
        now = trio.current_time()
        result = self.table.add(contact, now)
        if result.ping is None or self._nursery is None:
            return
        if self._evictions >= MAX_EVICTION_PINGS:
            # Too many probes running: let the head stay (it is the safe choice).
            self.table.seen(result.ping.node_id, now)
            return
        self._evictions += 1
        self._nursery.start_soon(self._ping_head, result.ping)

    async def _ping_head(self, head: Contact) -> None:
        try:
            node_id = await self._rpc.ping(head.address)
        except NoReply:
            node_id = b""
        finally:
            self._evictions -= 1
        if node_id == head.node_id:
            self.table.seen(head.node_id, trio.current_time())
        else:
            log.info("evicting unresponsive contact %s at %s:%d", head.node_id.hex(), head.host, head.port)
            self.table.remove(head.node_id)
