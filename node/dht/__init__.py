"""mu's Kademlia DHT on trio (specs/dht.md).

    async with open_dht(identity, data_dir=path, contact=ContactInfo(tcp_port=4001)) as dht:
        await dht.bootstrap([("192.0.2.1", 4000)])
        closest = await dht.lookup(key)
        await dht.announce_provider(dht_key(address), terms={"price_msat_per_mib": 10})
        providers = await dht.get_providers(dht_key(address))
        record = await dht.get_contact(node_id)
        await dht.publish_record(sign_mutable(seed, seq, b"value"))
        newest = await dht.resolve_record(public_key)
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from node.dht._ops import Announcement, NodesFound
from node.dht._persist import TABLE_FILE, load_table, save_table
from node.dht._rpc import NoReply, ask_for_icmp_errors
from node.dht._service import DhtNode, open_table
from protocol.identity import Identity
from protocol.kademlia import Contact, ContactInfo, ContactRecord, ProviderRecord
from protocol.kademlia.mutable import MutableRecord, MutableStore
from protocol.kademlia.lookup import REQUEST_TIMEOUT
from protocol.kademlia.storage import ProviderStore, ValueStore

__all__ = [
    "Announcement", "Contact", "ContactInfo", "ContactRecord", "DhtNode", "MutableRecord", "NodesFound", "NoReply",
    "ProviderRecord", "TABLE_FILE", "load_table", "open_dht", "save_table",
]

log = logging.getLogger("mu.dht")


@asynccontextmanager
async def open_dht(
    identity: Identity,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    data_dir: Path | str | None = None,
    contact: ContactInfo | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    values: ValueStore | None = None,
    providers: ProviderStore | None = None,
    records: MutableStore | None = None,
    wall_clock: Callable[[], float] = time.time,
    loopback_devnet: bool = False,
) -> AsyncIterator[DhtNode]:
    """Run a DHT node on UDP ``host:port`` (port 0: the OS picks) until the block exits.

    The routing table saved in ``data_dir`` (if any) is loaded at start and
    written back at exit.  ``contact`` is what the node's signed contact
    record advertises (TCP port, payment key, host); the TCP port defaults to
    the UDP port and the host to the bound address.  ``values``,
    ``providers`` and ``records`` replace the default-bounded stores, ``wall_clock`` the Unix
    clock used for record expiry (tests move it by hand).  ``loopback_devnet``
    lifts the routing table's address-prefix limits for loopback addresses,
    where a local test network runs every node (specs/dht.md §5.3 Address
    limits); without it loopback counts like any address.

    Raises:
        OSError: the socket cannot be bound.
    """
    path = Path(data_dir) if data_dir is not None else None
    raw = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    errors = raw if ask_for_icmp_errors(raw) else None
    sock = trio.socket.from_stdlib_socket(raw)
    with sock:
        await sock.bind((host, port))
        table = open_table(identity, path, loopback_devnet=loopback_devnet)
        node = DhtNode(identity, sock, path, contact, request_timeout=request_timeout, errors=errors,
                       values=values, providers=providers, records=records, table=table, wall_clock=wall_clock)
        log.info("dht node %s on %s:%d, %d saved contacts", identity.node_id.hex(), node.host, node.port, len(table))
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.serve)
                try:
                    yield node
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if path is not None:
                try:
                    node.save()
                except OSError as exc:
                    log.warning("could not save the routing table: %s", exc)
