"""Fetching from several hosts over real transport sessions on loopback (specs/network.md §4).

Hosts are real transports serving real chunk stores with the transport's
ChunkServer.  A host that is killed has its whole transport (listener and
sessions) torn down mid-download; a lying host runs the real ChunkServer and
corrupts its replies on the way out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from coincurve import PrivateKey

from node.files.fetcher import SessionSource, fetch_file
from node.files.local import add_file
from node.store import ChunkStore
from node.transport import ChunkServer, Session, open_transport
from protocol.identity import Identity
from protocol.wire import Chunk, Message

CHUNK = 64 * 1024
MIB = 1 << 20


class CountingServer:
    """The real ChunkServer, counting chunks served; may corrupt replies after ``lie_after``."""

    def __init__(self, store: ChunkStore, lie_after: int | None = None,
                 on_served: Callable[[int], None] | None = None) -> None:
        self.inner = ChunkServer(store)
        self.served = 0
        self.lie_after = lie_after
        self.on_served = on_served

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        reply = await self.inner.handle_request(session, message)
        if isinstance(reply, Chunk):
            self.served += 1
            if self.on_served is not None:
                self.on_served(self.served)
            if self.lie_after is not None and self.served > self.lie_after:
                reply = Chunk(request_id=reply.request_id, address=reply.address,
                              data=bytes([reply.data[0] ^ 0xFF]) + reply.data[1:])
        return reply


def payment_key() -> bytes:
    return PrivateKey().public_key.format(compressed=True)


@pytest.fixture
def sample(tmp_path: Path):
    src = tmp_path / "sample.bin"
    src.write_bytes(os.urandom(4 * MIB + 999))
    origin = ChunkStore(tmp_path / "origin")
    link = add_file(origin, src, chunk_size=CHUNK).link
    return src, link, origin


def host_store(origin: ChunkStore, path: Path) -> ChunkStore:
    store = ChunkStore(path)
    store.put_many((a, origin.get(a)) for a in origin.list())
    return store


async def run_host(server: CountingServer, identity: Identity, cancel_scope: trio.CancelScope, *,
                   task_status=trio.TASK_STATUS_IGNORED) -> None:
    with cancel_scope:
        async with open_transport(identity, server, payment_key=payment_key()) as t:
            task_status.started(t.port)
            await trio.sleep_forever()


async def start_hosts(nursery: trio.Nursery, servers: list[CountingServer]) -> list[tuple[bytes, int, trio.CancelScope]]:
    out = []
    for server in servers:
        identity = Identity(os.urandom(32))
        scope = trio.CancelScope()
        port = await nursery.start(run_host, server, identity, scope)
        out.append((identity.node_id, port, scope))
    return out


async def test_fetch_from_three_hosts_over_sessions(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    servers = [CountingServer(host_store(origin, tmp_path / f"h{i}")) for i in range(3)]
    async with trio.open_nursery() as nursery:
        hosts = await start_hosts(nursery, servers)
        async with open_transport(Identity(os.urandom(32)), ChunkServer(ChunkStore(tmp_path / "me")),
                                  payment_key=payment_key()) as me:
            sources = [SessionSource(await me.connect(nid, "127.0.0.1", port)) for nid, port, _ in hosts]
            out = tmp_path / "out.bin"
            result = await fetch_file(link, out, sources, max_price_per_mib=0, window=4)
        nursery.cancel_scope.cancel()
    assert out.read_bytes() == src.read_bytes()
    assert all(s.served > 0 for s in servers)
    assert sum(s.served for s in servers) == len(origin) == result.progress.chunks.chunks_done


async def test_holder_killed_mid_download(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    kill = trio.Event()
    victim = CountingServer(host_store(origin, tmp_path / "h0"), on_served=lambda n: n == 10 and kill.set())
    servers = [victim] + [CountingServer(host_store(origin, tmp_path / f"h{i}")) for i in (1, 2)]
    async with trio.open_nursery() as nursery:
        hosts = await start_hosts(nursery, servers)

        async def killer() -> None:
            await kill.wait()
            hosts[0][2].cancel()  # the whole host goes away: listener and sessions

        nursery.start_soon(killer)
        async with open_transport(Identity(os.urandom(32)), ChunkServer(ChunkStore(tmp_path / "me")),
                                  payment_key=payment_key()) as me:
            sources = [SessionSource(await me.connect(nid, "127.0.0.1", port)) for nid, port, _ in hosts]
            out = tmp_path / "out.bin"
            with trio.fail_after(60):
                result = await fetch_file(link, out, sources, max_price_per_mib=0, window=4)
        nursery.cancel_scope.cancel()
    assert kill.is_set()
    assert out.read_bytes() == src.read_bytes()
    assert servers[1].served + servers[2].served >= len(origin) - victim.served
    assert result.progress.chunks.chunks_done == len(origin)


async def test_lying_host_is_banned_and_file_is_right(tmp_path: Path, sample) -> None:
    src, link, origin = sample
    liar = CountingServer(host_store(origin, tmp_path / "h0"), lie_after=2)
    servers = [liar, CountingServer(host_store(origin, tmp_path / "h1"))]
    async with trio.open_nursery() as nursery:
        hosts = await start_hosts(nursery, servers)
        async with open_transport(Identity(os.urandom(32)), ChunkServer(ChunkStore(tmp_path / "me")),
                                  payment_key=payment_key()) as me:
            sources = [SessionSource(await me.connect(nid, "127.0.0.1", port)) for nid, port, _ in hosts]
            out = tmp_path / "out.bin"
            result = await fetch_file(link, out, sources, max_price_per_mib=0, window=2)
        nursery.cancel_scope.cancel()
    assert out.read_bytes() == src.read_bytes()
    assert result.banned == (hosts[0][0],)
    assert liar.served <= 2 + 2  # two honest replies, then at most one window of lies
