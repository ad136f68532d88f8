"""Interop with the stock ``kademlia`` 2.2.3 package (issue 6, "Must hold": interop).

Stock ``kademlia.network.Server`` nodes run on asyncio in a subprocess; mu
nodes run on trio here.  All sockets are on 127.0.0.1 with OS-chosen ports.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import AsyncExitStack

import trio

from node.dht import open_dht
from protocol.identity import Identity
from protocol.kademlia import distance
from tests.node.dht.stock import open_stock_nodes


async def test_stock_and_mu_nodes_form_one_network() -> None:
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        stock = await open_stock_nodes(nursery)
        s0 = await stock.command(cmd="start")
        s1 = await stock.command(cmd="start")
        s2 = await stock.command(cmd="start")
        for s in (s1, s2):
            await stock.command(cmd="bootstrap", index=s["index"], addrs=[["127.0.0.1", s0["port"]]])

        mu = [await stack.enter_async_context(open_dht(Identity(secrets.token_bytes(32)), request_timeout=5.0, loopback_devnet=True)) for _ in range(5)]
        # A mu node bootstraps from stock nodes only...
        await mu[0].bootstrap([("127.0.0.1", s0["port"])])
        for node in mu[1:]:
            await node.bootstrap([("127.0.0.1", mu[0].port)])

        # ...and finds them in lookups: the network is 8 nodes (< k), so a
        # lookup from any mu node returns every other node, stock ones included.
        stock_ids = {bytes.fromhex(s["id"]) for s in (s0, s1, s2)}
        key = secrets.token_bytes(20)
        found = await mu[3].lookup(key)
        everyone = stock_ids | {n.node_id for n in mu}
        expected = sorted(everyone - {mu[3].node_id}, key=lambda i: distance(i, key))
        assert [c.node_id for c in found] == expected
        assert stock_ids <= {c.node_id for c in await mu[0].lookup(mu[0].node_id)}

        # Stock contacts stay plain; a mu contact becomes "mu" once its signed
        # contact record verifies against its node ID (specs/dht.md §3.2).
        assert all(not mu[0].table.get(i).is_mu for i in stock_ids)  # type: ignore[union-attr]
        record = await mu[0].get_contact(mu[1].node_id)
        assert record is not None and record.public_key == mu[1].identity.public_key
        assert mu[0].table.get(mu[1].node_id).is_mu  # type: ignore[union-attr]

        # A stock node bootstraps from a mu node and sees mu nodes.
        s3 = await stock.command(cmd="start")
        joined = await stock.command(cmd="bootstrap", index=s3["index"], addrs=[["127.0.0.1", mu[2].port]])
        assert {n.node_id.hex() for n in mu} <= {row[0] for row in joined["found"]}

        # A value the stock node sets is stored by the mu nodes.
        assert (await stock.command(cmd="set", index=s3["index"], key="greeting", value="hello from stock"))["ok"]
        dkey = hashlib.sha1(b"greeting").digest()
        now = mu[0].wall_now()
        assert all(node.values.get(dkey, now) == "hello from stock" for node in mu)

        # With every stock node that could hold it stopped, a fresh stock node
        # joining through a mu node reads the value back from mu nodes only.
        for s in (s0, s1, s2, s3):
            await stock.command(cmd="stop", index=s["index"])
        s4 = await stock.command(cmd="start")
        await stock.command(cmd="bootstrap", index=s4["index"], addrs=[["127.0.0.1", mu[4].port]])
        got = await stock.command(cmd="get", index=s4["index"], key="greeting")
        assert got["value"] == "hello from stock"

        assert stock.process.stdin is not None
        await stock.process.stdin.aclose()
        nursery.cancel_scope.cancel()
