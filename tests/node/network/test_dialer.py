"""The node's PeerDialer stays usable however many peers it has dialled (specs/network.md §7).

Real transports and a real DHT node on loopback.  Unreachable peers are node
IDs with no contact record (the DHT knows nobody) or with an address on a
closed loopback port (the connection is refused at once), so a thousand
dials take seconds.  Time is trio's ``MockClock`` (``mock_clock``: it stands
still unless the test jumps it), so the unreachable TTL is crossed without
waiting and no dial or handshake deadline fires on its own.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from node.dht import ContactInfo, open_dht
from node.files import locate
from node.files.locate import MAX_CACHED_SESSIONS, MAX_UNREACHABLE, UNREACHABLE_TTL, PeerDialer
from node.store import ChunkStore
from node.transport import ChunkServer, Transport, open_transport
from protocol.identity import Identity
from tests.helpers.transport import payment_key

LOOPBACK = "127.0.0.1"


def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound by the OS, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def random_id() -> bytes:
    return os.urandom(20)


@asynccontextmanager
async def peer(store: ChunkStore, identity: Identity | None = None, port: int = 0) -> AsyncIterator[Transport]:
    """A reachable peer: a real transport serving ``store``."""
    async with open_transport(identity or Identity(os.urandom(32)), ChunkServer(store),
                              payment_key=payment_key(0), port=port) as transport:
        yield transport


@asynccontextmanager
async def dialer_node(tmp_path: Path) -> AsyncIterator[PeerDialer]:
    """Our node: a transport and a DHT node that knows nobody, and the dialer over them."""
    identity = Identity(os.urandom(32))
    async with peer(ChunkStore(tmp_path / "ours"), identity) as transport, open_dht(identity) as dht:
        yield PeerDialer(dht, transport)


async def test_a_thousand_dialled_peers_do_not_stop_new_dials(tmp_path: Path,
                                                              mock_clock: trio.testing.MockClock) -> None:
    store = ChunkStore(tmp_path / "peers")
    dead_port = closed_port()
    async with AsyncExitStack() as stack:
        dialer = await stack.enter_async_context(dialer_node(tmp_path))
        live = [await stack.enter_async_context(peer(store)) for _ in range(10)]
        dialled = 0
        for transport in live:  # reachable: a session each
            dialer.learn(transport.identity.node_id, LOOPBACK, transport.port)
            assert await dialer.session(transport.identity.node_id) is not None
            dialled += 1
        for _ in range(20):  # no contact record anywhere
            assert await dialer.session(random_id()) is None
            dialled += 1
        while dialled < 1000:  # a contact on a closed port: refused
            node_id = random_id()
            dialer.learn(node_id, LOOPBACK, dead_port)
            assert await dialer.session(node_id) is None
            dialled += 1

        newcomer = await stack.enter_async_context(peer(store))
        dialer.learn(newcomer.identity.node_id, LOOPBACK, newcomer.port)
        session = await dialer.session(newcomer.identity.node_id)
        assert session is not None and session.is_open
        assert session.peer_node_id == newcomer.identity.node_id
        assert len(dialer._sessions) == 11 and len(dialer._unreachable) == 990

        # A session that closes is dropped, and its node is dialled afresh.
        gone = live[0].identity.node_id
        cached = await dialer.session(gone)
        assert cached is not None
        cached.close()
        await cached.wait_closed()
        again = await dialer.session(gone)
        assert again is not None and again is not cached and again.is_open


@asynccontextmanager
async def _marked_then_back(tmp_path: Path) -> AsyncIterator[tuple[PeerDialer, Identity, Transport]]:
    """A dialer whose dial to a peer failed (so it marked the peer unreachable), and the peer up again at that address."""
    identity = Identity(os.urandom(32))
    port = closed_port()
    async with dialer_node(tmp_path) as dialer:
        dialer.learn(identity.node_id, LOOPBACK, port)
        assert await dialer.session(identity.node_id) is None
        async with peer(ChunkStore(tmp_path / "peers"), identity, port) as back:
            yield dialer, identity, back


async def test_an_unreachable_peer_is_dialled_again_after_the_ttl(tmp_path: Path,
                                                                   mock_clock: trio.testing.MockClock) -> None:
    async with _marked_then_back(tmp_path) as (dialer, identity, back):
        # The peer came up at that address; within the TTL it is not dialled.
        mock_clock.jump(UNREACHABLE_TTL - 1)
        assert await dialer.session(identity.node_id) is None
        assert back.session_count == 0
        mock_clock.jump(1)
        session = await dialer.session(identity.node_id)
        assert session is not None and session.peer_node_id == identity.node_id


async def test_dialer_records_are_bounded_least_recent_first(tmp_path: Path, mock_clock: trio.testing.MockClock,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locate, "MAX_CACHED_SESSIONS", 2)
    monkeypatch.setattr(locate, "MAX_UNREACHABLE", 3)
    store = ChunkStore(tmp_path / "peers")
    dead_port = closed_port()
    async with AsyncExitStack() as stack:
        dialer = await stack.enter_async_context(dialer_node(tmp_path))
        live = [await stack.enter_async_context(peer(store)) for _ in range(3)]
        for transport in live:
            dialer.learn(transport.identity.node_id, LOOPBACK, transport.port)
            assert await dialer.session(transport.identity.node_id) is not None
        assert list(dialer._sessions) == [t.identity.node_id for t in live[1:]]
        # The session dropped from the cache stays open: the transport hands it back.
        assert await dialer.session(live[0].identity.node_id) is not None
        dead = [random_id() for _ in range(5)]
        for node_id in dead:
            dialer.learn(node_id, LOOPBACK, dead_port)
            assert await dialer.session(node_id) is None
        assert list(dialer._unreachable) == dead[2:]
    assert MAX_CACHED_SESSIONS == 256 and MAX_UNREACHABLE == 1024  # the real bounds (specs/network.md)


async def test_a_stale_learned_address_gives_way_to_the_nodes_own_contact_record(tmp_path: Path) -> None:
    # A provider record names the port a node had before it restarted; its own signed contact record,
    # fetched through the DHT, names the port it listens on now (the kill -9 devnet: a payer's reconcile
    # dial found the restarted host "unreachable" for 300 s because of the stale address).
    identity = Identity(os.urandom(32))
    async with dialer_node(tmp_path) as dialer, peer(ChunkStore(tmp_path / "peer"), identity) as transport, \
            open_dht(identity, contact=ContactInfo(tcp_port=transport.port)) as host_dht:
        await dialer.dht.bootstrap([(LOOPBACK, host_dht.port)])
        dialer.learn(identity.node_id, LOOPBACK, closed_port())
        session = await dialer.session(identity.node_id)
        assert session is not None and session.peer_node_id == identity.node_id
        assert dialer.dials == 2 and identity.node_id not in dialer._addresses
        assert not dialer.is_unreachable(identity.node_id)


async def test_despite_mark_dials_a_node_marked_unreachable(tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    # The payer's reconcile tries a host again after 30 s, inside the 300 s mark its first failed dial left
    # (the host was killed as it dialled, and is back since): without despite_mark that attempt never dials.
    async with _marked_then_back(tmp_path) as (dialer, identity, back):
        mock_clock.jump(30)
        assert await dialer.session(identity.node_id) is None and back.session_count == 0
        session = await dialer.session(identity.node_id, despite_mark=True)
        assert session is not None and session.peer_node_id == identity.node_id
        assert not dialer.is_unreachable(identity.node_id)
