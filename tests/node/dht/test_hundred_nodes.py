"""100 mu nodes on real UDP sockets (issue 6, "Must hold": lookups and providers)."""

from __future__ import annotations

import random
import secrets
from contextlib import AsyncExitStack

import pytest
import trio

from node.dht import open_dht
from protocol.identity import Identity
from protocol.kademlia import K, distance

N_NODES = 100
N_LOOKUPS = 20


@pytest.mark.slow
async def test_hundred_nodes_lookups_match_brute_force_and_providers_are_found() -> None:
    rng = random.Random(6)
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(open_dht(Identity(rng.randbytes(32)), request_timeout=5.0, loopback_devnet=True))
            for _ in range(N_NODES)
        ]
        # Each node joins through a node that joined before it.
        for i, node in enumerate(nodes[1:], start=1):
            seed = nodes[rng.randrange(i)]
            await node.bootstrap([("127.0.0.1", seed.port)])

        all_ids = [n.node_id for n in nodes]
        for _ in range(N_LOOKUPS):
            searcher = rng.choice(nodes)
            key = secrets.token_bytes(20)
            found = [c.node_id for c in await searcher.lookup(key)]
            brute = sorted((i for i in all_ids if i != searcher.node_id), key=lambda i: distance(i, key))[:K]
            assert found == brute

        key = secrets.token_bytes(20)
        provider = nodes[17]
        announced = await provider.announce_provider(key, tcp_port=4040, terms={"price_sat_per_mib": 3})
        assert len(announced.stored_at) == K
        for reader in nodes:
            records = await reader.get_providers(key)
            assert [(r.node_id, r.tcp_port, dict(r.terms)) for r in records] == [
                (provider.node_id, 4040, {"price_sat_per_mib": 3})
            ]
        # Every node can also fetch any other node's signed contact record.
        record = await nodes[3].get_contact(nodes[88].node_id)
        assert record is not None and record.node_id == nodes[88].node_id and record.udp_port == nodes[88].port
        assert await nodes[3].get_contact(trio.socket.inet_aton("1.2.3.4") * 5) is None
