"""Retention on a running node: paid chunks served until they expire, then collected; pins stay and survive a restart.

An in-process node (``open_node``, the daemon ``mu node`` runs) against a real
``mu chain`` on loopback, a real paying client over the transport, and a
plain DHT node the restarted host announces its pinned root to.  Time of day
is the node's injected ``wall_clock``: the test moves it, nothing sleeps.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import trio

from node.runtime.daemon import NodeConfig, open_node
from node.transport import RequestError
from protocol.fetch import dht_key
from protocol.wire import ErrorCode
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import open_fetcher
from tests.helpers.network import run_node

CHUNK = 32 * 1024  # paid chunks
FILE_CHUNK = 64 * 1024  # the smallest chunk size of mu add
PUT_PRICE = 8_192  # sats per MiB stored: 256 per chunk
RETENTION = 3_600


async def _ignore(_event: object) -> None:
    return None


async def test_paid_chunks_expire_pinned_stay_and_pins_survive_restart(tmp_path: Path) -> None:
    clock = [float(int(time.time()))]
    t0 = int(clock[0])
    src = tmp_path / "mine.bin"
    src.write_bytes(os.urandom(3 * FILE_CHUNK + 7))
    a, b = os.urandom(CHUNK), os.urandom(CHUNK)
    addr_a, addr_b = hashlib.sha256(a).digest(), hashlib.sha256(b).digest()
    async with open_mu_chain(tmp_path / "chain") as chain:
        config = NodeConfig(data_dir=tmp_path / "host", chain_rpc=chain.url, chain_cookie=chain.cookie_path,
                            price_per_mib_put=PUT_PRICE, retention_seconds=RETENTION, free_allowance=0,
                            gc_period=10 * RETENTION)
        async with open_node(config, wall_clock=lambda: clock[0]) as node, \
                open_fetcher(tmp_path / "payer", chain) as fetcher:
            # `mu add` on the host itself: every chunk of the file is pinned, with its root.
            added = await node.network.add({"path": str(src), "chunk_size": FILE_CHUNK, "replicas": 1}, _ignore)
            root = bytes.fromhex(added["root"])
            mine = {m.address for m in node.store.entries_meta() if m.pinned}
            assert len(mine) == added["chunks"] >= 5 and root in mine
            assert node.store.pinned_roots() == [root] and node.network.pinned == {root}

            session = await fetcher.transport.connect(node.identity.node_id, "127.0.0.1", node.transport.port)
            link = await fetcher.payer.link(session)
            await fetcher.open_channel(link, capacity=20_000)
            assert await fetcher.payer.put(link, addr_a, a) is True
            assert await fetcher.payer.put(link, addr_b, b) is True
            assert node.store.meta(addr_b).paid_until == t0 + RETENTION
            clock[0] = t0 + RETENTION / 2
            assert await fetcher.payer.put(link, addr_a, a) is False  # already held: retention extended
            assert node.store.meta(addr_a).paid_until == t0 + RETENTION + RETENTION // 2

            clock[0] = t0 + RETENTION - 1
            assert (await node.gc.collect()).removed == ()
            assert await fetcher.payer.get(link, addr_b, expected_size=CHUNK) == b

            clock[0] = t0 + RETENTION  # b's paid retention runs out; a's was extended
            report = await node.gc.collect()
            assert report.removed == (addr_b,) and report.bytes_freed == CHUNK
            with pytest.raises(RequestError) as info:
                await fetcher.payer.get(link, addr_b, expected_size=CHUNK)
            assert info.value.code == ErrorCode.NOT_FOUND
            assert await fetcher.payer.get(link, addr_a, expected_size=CHUNK) == a

            clock[0] = t0 + 100 * RETENTION
            assert (await node.gc.collect()).removed == (addr_a,)
            assert {m.address for m in node.store.entries_meta()} == mine  # pinned chunks stay
            assert node.gc.status()["removed"] == 2

        # Restart, joining a DHT peer that has never heard of us: the pins are
        # still there, and the node announces itself as provider of the root.
        async with trio.open_nursery() as nursery:
            peer = await nursery.start(run_node, tmp_path / "peer", 2.0)
            config.bootstrap = (("127.0.0.1", peer.dht.port),)
            async with open_node(config, wall_clock=lambda: clock[0]) as node:
                assert node.network.pinned == {root} and node.store.pinned_roots() == [root]
                assert {m.address for m in node.store.entries_meta() if m.pinned} == mine
                with trio.fail_after(30):
                    await node.network.pins_announced.wait()
                records = peer.dht.providers.get(dht_key(root), time.time())
                assert node.identity.node_id in {r.node_id for r in records}
                clock[0] = t0 + 1000 * RETENTION
                assert (await node.gc.collect()).removed == ()
            nursery.cancel_scope.cancel()
