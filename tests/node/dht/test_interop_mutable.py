"""Stock ``kademlia`` 2.2.3 nodes still store and fetch plain values through mu nodes
that hold mutable records (issue 16 "Must hold"; specs/dht.md §7.3, §4.3).

A stock node ignores ``mu_get_record``: a mu lookup counts it as failed and
publishes to the mu nodes that answered.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import AsyncExitStack

import trio

from node.dht import open_dht
from protocol.identity import Identity
from protocol.kademlia import sign_mutable
from tests.node.dht.stock import open_stock_nodes


async def test_plain_values_through_mu_nodes_holding_mutable_records() -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        stock = await open_stock_nodes(nursery)
        s0 = await stock.command(cmd="start")
        mu = [await stack.enter_async_context(open_dht(Identity(secrets.token_bytes(32)), request_timeout=5.0,
                                                       loopback_devnet=True)) for _ in range(4)]
        await mu[0].bootstrap([("127.0.0.1", s0["port"])])
        for node in mu[1:]:
            await node.bootstrap([("127.0.0.1", mu[0].port)])

        seed = secrets.token_bytes(32)
        record = sign_mutable(seed, 1, b"mu://folder-root")
        assert await mu[1].publish_record(record) == 3  # the other mu nodes; the stock node stays silent
        assert all(n.records.get(record.key, n.wall_now()) == record for n in mu)

        # A stock node joining through a mu node stores and reads a plain value.
        s1 = await stock.command(cmd="start")
        await stock.command(cmd="bootstrap", index=s1["index"], addrs=[["127.0.0.1", mu[2].port]])
        assert (await stock.command(cmd="set", index=s1["index"], key="plain", value="still works"))["ok"]
        dkey = hashlib.sha1(b"plain").digest()
        assert all(n.values.get(dkey, n.wall_now()) == "still works" for n in mu)
        await stock.command(cmd="stop", index=s1["index"])
        await stock.command(cmd="stop", index=s0["index"])
        s2 = await stock.command(cmd="start")
        await stock.command(cmd="bootstrap", index=s2["index"], addrs=[["127.0.0.1", mu[3].port]])
        assert (await stock.command(cmd="get", index=s2["index"], key="plain"))["value"] == "still works"
        # And the mutable record resolves as before.
        assert await mu[3].resolve_record(record.public_key) == record

        assert stock.process.stdin is not None
        await stock.process.stdin.aclose()
        nursery.cancel_scope.cancel()
