"""Signed mutable records on a real network of DHT nodes (issue 16 item 2, specs/dht.md §7.3).

Every node is a real ``open_dht`` on a UDP socket on 127.0.0.1.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from node.dht import DhtNode, open_dht
from protocol.identity import Identity
from protocol.kademlia import K, distance, mutable_key, sign_mutable


@asynccontextmanager
async def open_network(n: int) -> AsyncIterator[list[DhtNode]]:
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(
            open_dht(Identity(secrets.token_bytes(32)), request_timeout=2.0, loopback_devnet=True))
            for _ in range(n)]
        for node in nodes[1:]:
            await node.bootstrap([("127.0.0.1", nodes[0].port)])
        yield nodes


def holders(nodes: list[DhtNode], public_key: bytes) -> dict[bytes, int]:
    """Node id -> seq held, for each node holding a record of ``public_key``."""
    key = mutable_key(public_key)
    out = {}
    for node in nodes:
        record = node.records.get(key, node.wall_now())
        if record is not None:
            out[node.node_id] = record.seq
    return out


async def test_publish_then_resolve_from_another_node() -> None:
    seed = secrets.token_bytes(32)
    async with open_network(8) as nodes:
        first = sign_mutable(seed, 1, b"mu://first")
        stored = await nodes[0].publish_record(first)
        # Fewer nodes than k: every other node is among the k closest and takes it.
        assert stored == len(nodes) - 1
        assert len(holders(nodes, first.public_key)) == len(nodes)
        assert await nodes[5].resolve_record(first.public_key) == first

        second = sign_mutable(seed, 2, b"mu://second")
        assert await nodes[3].publish_record(second) == len(nodes) - 1
        assert await nodes[7].resolve_record(first.public_key) == second
        assert await nodes[7].resolve_record(Identity(secrets.token_bytes(32)).public_key) is None


async def test_newest_record_wins_when_nodes_disagree_and_is_written_back() -> None:
    seed = secrets.token_bytes(32)
    async with open_network(6) as nodes:
        old = sign_mutable(seed, 4, b"old")
        new = sign_mutable(seed, 9, b"new")
        # Half the nodes hold seq 4, one holds seq 9, the rest nothing.
        for node in nodes[:3]:
            node.records.put(old, "192.0.2.1", node.wall_now())
        nodes[3].records.put(new, "192.0.2.1", nodes[3].wall_now())
        assert await nodes[5].resolve_record(old.public_key) == new
        # The reader wrote seq 9 back to every node that answered with less.
        assert holders(nodes, old.public_key) == {n.node_id: 9 for n in nodes}


async def test_publish_reaches_the_k_closest_of_a_larger_network() -> None:
    seed = secrets.token_bytes(32)
    async with open_network(K + 6) as nodes:
        record = sign_mutable(seed, 1, b"x" * 1000)
        stored = await nodes[0].publish_record(record)
        assert stored == K
        key = record.key
        others = sorted((n for n in nodes if n is not nodes[0]), key=lambda n: distance(n.node_id, key))
        assert {n.node_id for n in others[:K]} <= set(holders(nodes, record.public_key))
        with trio.fail_after(30):
            assert await nodes[-1].resolve_record(record.public_key) == record
