"""Hosts resolved once per file; a dead node costs one bounded attempt per add (issue 22, items 2 and 5).

Real DHT nodes on UDP and real transports on loopback (tests/helpers/network.py).
specs/network.md §3 Placement (Resolving placement from a view) and §7
Replication, providers, republishing (Dead nodes).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest
import trio

import node.files.locate as locate
from node.dht import ContactInfo, ContactRecord
from node.files.fetcher import fetch_file
from node.files.local import add_file
from node.files.locate import DhtResolver, PeerDialer, PlacementView
from node.files.uploader import replicate_file
from node.store import ChunkStore
from protocol.fetch import placement
from protocol.kademlia.lookup import SOFT_TIMEOUT
from tests.helpers.network import collect, network

CHUNK = 64 * 1024
CHUNKS = 80


def random_file(tmp_path: Path, size: int) -> Path:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(size))
    return src


class DarkPort:
    """A TCP port that accepts connections and never speaks: a stopped process's, or a host gone dark."""

    def __init__(self) -> None:
        self.accepted = 0

    async def _swallow(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        await trio.sleep_forever()

    async def listen(self, nursery: trio.Nursery) -> int:
        """Start listening in ``nursery``; the port."""
        listeners = await nursery.start(functools.partial(trio.serve_tcp, self._swallow, 0, host="127.0.0.1"))
        return int(listeners[0].socket.getsockname()[1])


def test_a_complete_view_computes_the_replica_set_a_lookup_would_find() -> None:
    ids = [os.urandom(20) for _ in range(12)]
    address = os.urandom(32)
    assert PlacementView(ids, complete=True).closest(address, 3) == placement(address, ids, 3)
    assert PlacementView(ids, complete=False).closest(address, 3) is None


async def test_a_fetch_of_80_chunks_makes_a_few_lookups_not_one_per_chunk(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(CHUNKS * CHUNK - 100))
    async with network(tmp_path, 6) as nodes:
        uploader, fetcher = nodes[0], nodes[5]
        link = add_file(uploader.store, src, chunk_size=CHUNK).link
        up = uploader.dialer()
        report = await replicate_file(link, uploader.store, up)
        assert report.chunks >= CHUNKS and report.under_replicated == 0
        assert up.lookups == report.dht_lookups == 1  # the root's view; every placement computed from it

        dialer = fetcher.dialer()
        resolver = DhtResolver(dialer, link.root)
        out = tmp_path / "fetched.bin"
        fresh = ChunkStore(tmp_path / "fresh")  # the fetching node holds none of the file
        result = await fetch_file(link, out, [], max_price_per_mib=0, resolver=resolver, store=fresh)
        assert out.read_bytes() == src.read_bytes()
        assert result.progress.chunks.chunks_done >= CHUNKS
        assert resolver.lookups == dialer.lookups == 2  # the root's view and its providers
        assert dialer.dials <= len(nodes) - 1  # each host dialled once
        assert result.progress.local_chunks == 0 and len(fresh) == report.chunks


async def test_a_chunk_whose_computed_holders_fail_gets_a_real_lookup(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(4 * CHUNK))
    async with network(tmp_path, 5) as nodes:
        uploader, fetcher = nodes[0], nodes[4]
        link = add_file(uploader.store, src, chunk_size=CHUNK).link
        await replicate_file(link, uploader.store, uploader.dialer())
        uploader.scope.cancel()  # the provider of every chunk is gone

        # A view taken before nodes left:
        async def stale_view(address: bytes, *, soft: bool = False) -> PlacementView:
            return PlacementView([os.urandom(20) for _ in range(4)], complete=True)

        dialer = fetcher.dialer()
        monkeypatch.setattr(dialer, "view", stale_view)
        resolver = DhtResolver(dialer, link.root)
        out = tmp_path / "fetched.bin"
        with trio.fail_after(60):
            result = await fetch_file(link, out, [], max_price_per_mib=0, request_timeout=5.0, resolver=resolver)
        assert out.read_bytes() == src.read_bytes()
        # the view and the providers, then one real lookup per chunk the view placed wrongly
        assert resolver.lookups == 2 + result.progress.chunks.chunks_done


@pytest.mark.slow
async def test_a_stopped_replica_candidate_is_tried_once_per_add(tmp_path: Path, monkeypatch) -> None:
    """A node whose DHT still answers but whose TCP port accepts and never speaks (a stopped process)."""
    monkeypatch.setattr(locate, "DIAL_TIMEOUT", 2.0)
    src = random_file(tmp_path, 40 * CHUNK)
    dark = DarkPort()

    async with network(tmp_path, 5) as nodes, trio.open_nursery() as nursery:
        dead_port = await dark.listen(nursery)
        uploader, victim = nodes[0], nodes[1]
        # The victim's DHT names the port that swallows, as a stopped process's still-answering DHT would.
        victim.dht.handlers.contact_record = ContactRecord.create(
            victim.identity, host="127.0.0.1", udp_port=victim.dht.port, info=ContactInfo(tcp_port=dead_port),
            issued_at=int(time.time()))
        dialer = uploader.dialer()
        dialer.learn(victim.identity.node_id, "127.0.0.1", dead_port)
        link = add_file(uploader.store, src, chunk_size=CHUNK).link
        placed = []
        with trio.fail_after(60):
            report = await replicate_file(link, uploader.store, dialer, on_chunk=collect(placed))
        live = [n.identity.node_id for n in nodes[2:]]
        by_id = {n.identity.node_id: n for n in nodes}
        assert report.under_replicated == 0 and report.replicas_confirmed == 3 * report.chunks
        for p in placed:  # the victim's place goes to the next closest live node
            assert list(p.replicas) == placement(p.address, live, 3)
            assert all(by_id[h].store.has(p.address) for h in p.replicas)
        assert any(f.node_id == victim.identity.node_id for f in report.failures)  # it was a candidate
        assert dark.accepted == 1  # one attempt for the whole add, not one per chunk
        nursery.cancel_scope.cancel()


class LookupCounter:
    """A dialer over a network too big for one view: counts lookups and how many run at once."""

    def __init__(self, ids: list[bytes]) -> None:
        self.ids = ids
        self.lookups = 0
        self.running = 0
        self.most_at_once = 0
        self.exact = 0  # lookups that waited for every answer (specs/dht.md §6 Slow requests)

    async def view(self, address: bytes, *, soft: bool = False) -> PlacementView:
        return PlacementView(self.ids[:20], complete=False)

    async def providers(self, key: bytes, *, soft: bool = False) -> list[bytes]:
        return []

    async def closest_nodes(self, address: bytes, count: int, *, soft: bool = False) -> list[bytes]:
        self.lookups += 1
        self.exact += not soft
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await trio.sleep(0.01)  # a lookup's round trips (autojump clock)
        self.running -= 1
        return placement(address, self.ids, count)

    async def session(self, node_id: bytes) -> None:
        return None  # nothing to dial: this test counts lookups only


async def test_without_a_complete_view_lookups_run_ahead_and_concurrently(autojump_clock) -> None:
    ids = [os.urandom(20) for _ in range(40)]
    dialer = LookupCounter(ids)
    resolver = DhtResolver(dialer, os.urandom(32))  # type: ignore[arg-type]
    addresses = [os.urandom(32) for _ in range(20)]
    await resolver.ahead(addresses)
    assert dialer.lookups == 20 and dialer.most_at_once == locate.PARALLEL_LOOKUPS
    assert resolver.looks_up  # so the fetcher queues chunks in batches, for lookups to run together
    for address in addresses:  # the results are used, not looked up again
        await resolver.holders(address)
    assert dialer.lookups == 20 and dialer.exact == 0  # run ahead soft: a dead node costs SOFT_TIMEOUT
    await resolver.holders(addresses[0], lookup=True)  # the last resort asks the network again
    assert dialer.lookups == 21 and dialer.exact == 1  # and waits for every answer


async def test_an_empty_view_is_not_complete_and_is_taken_again(tmp_path: Path) -> None:
    async with network(tmp_path, 1) as nodes:  # alone: its lookups meet nobody
        dialer = nodes[0].dialer()
        view = await dialer.view(os.urandom(32))
        assert view.node_ids == [] and not view.complete
        resolver = DhtResolver(dialer, os.urandom(32))
        assert await resolver.holders(os.urandom(32)) == []
        assert await resolver.holders(os.urandom(32)) == []
        assert resolver.lookups == 5  # the view each time (it was empty), a lookup each time, the providers once


async def test_a_dead_provider_does_not_hold_a_fetch_whose_replica_set_answers(tmp_path: Path) -> None:
    # specs/network.md §7 Dialling: the root's providers name a node whose port accepts and never answers
    # (a host gone dark); the fetch takes every chunk from the replica set while that dial still runs.
    src, port = random_file(tmp_path, 20 * CHUNK), DarkPort()
    async with network(tmp_path, 4) as nodes, trio.open_nursery() as nursery:
        listening = await port.listen(nursery)
        uploader, fetcher = nodes[0], nodes[3]
        link = add_file(uploader.store, src, chunk_size=CHUNK).link
        assert (await replicate_file(link, uploader.store, uploader.dialer())).under_replicated == 0
        dialer = PeerDialer(fetcher.dht, fetcher.transport, nursery=nursery)
        dark = os.urandom(20)
        dialer.learn(dark, "127.0.0.1", listening)
        resolver = DhtResolver(dialer, link.root, providers=[dark, uploader.identity.node_id])
        out = tmp_path / "fetched.bin"
        with trio.fail_after(locate.DIAL_TIMEOUT / 2):
            await fetch_file(link, out, [], max_price_per_mib=0, resolver=resolver, store=ChunkStore(tmp_path / "f"))
        assert out.read_bytes() == src.read_bytes()
        assert port.accepted == 1 and dialer.dialling(dark)  # asked once, and never waited for
        nursery.cancel_scope.cancel()


class SlowRoot:
    """A dialer whose root lookups each meet a dead node (``SOFT_TIMEOUT`` of the view's and of the providers')."""

    def __init__(self, ids: list[bytes]) -> None:
        self.ids = ids
        self.started: list[float] = []

    async def view(self, address: bytes, *, soft: bool = False) -> PlacementView:
        self.started.append(trio.current_time())
        await trio.sleep(SOFT_TIMEOUT)
        return PlacementView(self.ids, complete=True)

    async def providers(self, key: bytes, *, soft: bool = False) -> list[bytes]:
        self.started.append(trio.current_time())
        await trio.sleep(SOFT_TIMEOUT)
        return self.ids[:1]

    async def session(self, node_id: bytes) -> None:
        return None


async def test_the_roots_view_and_providers_are_looked_up_side_by_side(autojump_clock) -> None:
    dialer = SlowRoot([os.urandom(20) for _ in range(4)])
    resolver = DhtResolver(dialer, os.urandom(32))  # type: ignore[arg-type]
    assert resolver.looks_up  # until the view is known to be complete
    start = trio.current_time()
    await resolver.ahead([os.urandom(32)])
    assert dialer.started == [start, start]  # a dead node both meet costs the first byte its wait once
    await resolver.holders(os.urandom(32))
    assert trio.current_time() - start == SOFT_TIMEOUT and resolver.lookups == 2
    assert not resolver.looks_up  # a complete view: holders computed, chunks queued as there is room
