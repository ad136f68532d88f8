"""An in-process test network: N mu nodes with real sockets on loopback.

Each node is a real transport (ChunkServer over its own ChunkStore) plus a
real DHT node on UDP whose contact record advertises the transport's port,
all in one trio run.  ``async with network(tmp_path, 10) as nodes: ...``
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from coincurve import PrivateKey

from node.dht import ContactInfo, DhtNode, open_dht
from node.files.locate import PeerDialer
from node.store import ChunkStore
from node.transport import ChunkServer, Transport, open_transport
from protocol.identity import Identity


def collect(into: list):
    """An async callback appending what it is given to ``into``."""
    async def on_item(item) -> None:
        into.append(item)
    return on_item


@dataclass
class Node:
    data_dir: Path
    identity: Identity
    store: ChunkStore
    transport: Transport
    dht: DhtNode
    scope: trio.CancelScope

    def dialer(self) -> PeerDialer:
        return PeerDialer(self.dht, self.transport)


async def run_node(path: Path, dht_timeout: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    identity = Identity(os.urandom(32))
    store = ChunkStore(path / "chunks")
    with trio.CancelScope() as scope:
        async with open_transport(identity, ChunkServer(store),
                                  payment_key=PrivateKey().public_key.format()) as transport:
            contact = ContactInfo(tcp_port=transport.port)
            async with open_dht(identity, contact=contact, request_timeout=dht_timeout, loopback_devnet=True) as dht:
                task_status.started(Node(path, identity, store, transport, dht, scope))
                await trio.sleep_forever()


@asynccontextmanager
async def network(tmp_path: Path, count: int, dht_timeout: float = 2.0):
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(run_node, tmp_path / f"node{i}", dht_timeout) for i in range(count)]
        for node in nodes[1:]:
            await node.dht.bootstrap([("127.0.0.1", nodes[0].dht.port)])
        for node in nodes:  # a second round so every table is full
            await node.dht.bootstrap([("127.0.0.1", nodes[-1].dht.port)])
        yield nodes
        nursery.cancel_scope.cancel()


