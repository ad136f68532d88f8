"""A dead node holds a lookup for the soft timeout only; a slow live one is not taken for dead.

specs/dht.md §6 Iterative lookup, "Slow requests" and "Silent addresses";
specs/network.md §3 Placement (Resolving placement from a view).  Real DHT
nodes on UDP (tests/helpers/network.py); time is trio's ``MockClock``, moved
by the test (``mock_clock``) or when every task waits (``autojump_clock``),
so every duration is exact.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from trio.socket import SocketType

from node.dht import DhtNode, NodesFound, NoReply, open_dht
from node.files.locate import PlacementView
from protocol.identity import Identity
from protocol.kademlia import Contact
from protocol.kademlia.lookup import SOFT_TIMEOUT_SHARE
from protocol.kademlia.wire import PING, Request, decode_datagram, encode_response
from tests.helpers.network import run_node

TIMEOUT = 2.0
SOFT = TIMEOUT * SOFT_TIMEOUT_SHARE


async def test_a_stopped_node_holds_the_view_for_the_soft_timeout_then_is_dropped(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(run_node, tmp_path / f"node{i}", TIMEOUT) for i in range(4)]
        for node in nodes[1:]:  # each through node 0 (it learns them as they ask)
            await node.dht.bootstrap([("127.0.0.1", nodes[0].dht.port)])
        await trio.testing.wait_all_tasks_blocked()
        searcher, stopped = nodes[0], nodes[3]
        table = searcher.dht.neighbours.table
        live = {n.identity.node_id for n in nodes[1:3]}
        assert table.get(stopped.identity.node_id) is not None
        stopped.scope.cancel()  # its sockets close: nothing answers there any more
        await trio.testing.wait_all_tasks_blocked()
        # A socket that reads nothing takes its port: like a host that is down, no ICMP error
        # comes back either (a closed port's error fails the request at once: test_unreachable.py).
        hole = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await hole.bind(("127.0.0.1", stopped.dht.port))
        dialer = searcher.dialer()

        start = trio.current_time()  # the clock moves only when every task waits (autojump)
        first = await dialer.view(os.urandom(32), soft=True)
        assert trio.current_time() - start == SOFT  # the live nodes answered at once; not the request timeout
        assert set(first.node_ids) == live
        assert not first.complete  # the slow one might have been a live node the view misses
        assert table.get(stopped.identity.node_id) is not None  # slow is not dead

        # Nothing came from it within a whole request timeout of asking: it is silent, known dead at once.
        await trio.sleep(TIMEOUT - SOFT)  # virtual time
        second = await dialer.view(os.urandom(32), soft=True)
        assert trio.current_time() - start == TIMEOUT
        assert set(second.node_ids) == live and second.complete
        assert table.get(stopped.identity.node_id) is None
        hole.close()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _searcher_knowing_a_fast_and_a_slow_node() -> AsyncIterator[tuple[DhtNode, bytes, bytes, SocketType]]:
    """A DHT node whose table holds a live DHT node and a bare UDP socket the test answers from (or not)."""
    slow_id = os.urandom(20)
    async with open_dht(Identity(os.urandom(32)), request_timeout=TIMEOUT, loopback_devnet=True) as dht, \
            open_dht(Identity(os.urandom(32)), request_timeout=TIMEOUT, loopback_devnet=True) as fast:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as slow:
            await slow.bind(("127.0.0.1", 0))
            now = trio.current_time()
            dht.neighbours.table.add(Contact(fast.node_id, "127.0.0.1", fast.port), now)
            dht.neighbours.table.add(Contact(slow_id, *slow.getsockname()), now)
            yield dht, fast.node_id, slow_id, slow


async def test_a_slow_live_node_is_not_taken_for_dead(mock_clock: trio.testing.MockClock) -> None:
    async with _searcher_knowing_a_fast_and_a_slow_node() as (dht, fast_id, slow_id, slow):
        address = slow.getsockname()
        found: list[NodesFound] = []

        async def find() -> None:
            found.append(await dht.find_nodes(os.urandom(20), soft=True))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(find)
            data, source = await slow.recvfrom(2048)  # asked; it will answer late
            request = decode_datagram(data)
            assert isinstance(request, Request)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(SOFT)
        (result,) = found
        assert [c.node_id for c in result.contacts] == [fast_id] and result.slow == 1

        # Its answer comes after the lookup ended, within the request timeout: it is alive.
        mock_clock.jump(TIMEOUT / 2 - SOFT)
        await slow.sendto(encode_response(request.msg_id, []), source)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(TIMEOUT)
        assert dht.neighbours.table.get(slow_id) is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ping_unanswered, dht, address)
            data, _ = await slow.recvfrom(2048)  # asked again, not refused as silent
            ping = decode_datagram(data)
            assert isinstance(ping, Request) and ping.name == PING
            nursery.cancel_scope.cancel()


async def _ping_unanswered(dht: object, address: tuple[str, int]) -> None:
    with pytest.raises(NoReply):
        await dht.rpc.ping(address)  # type: ignore[attr-defined]


async def test_a_lookup_that_must_be_exact_waits_for_a_slow_node(mock_clock: trio.testing.MockClock) -> None:
    """Without ``soft`` (records, announces, a stuck chunk's last resort) a slow answer is still awaited."""
    async with _searcher_knowing_a_fast_and_a_slow_node() as (dht, fast_id, slow_id, slow):
        found: list[NodesFound] = []

        async def find() -> None:
            found.append(await dht.find_nodes(os.urandom(20)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(find)
            data, source = await slow.recvfrom(2048)
            request = decode_datagram(data)
            assert isinstance(request, Request)
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(SOFT * 2)  # far past the soft timeout, within the request timeout
            await trio.testing.wait_all_tasks_blocked()
            assert not found  # still waiting for the slow node
            await slow.sendto(encode_response(request.msg_id, []), source)
        (result,) = found
        assert {c.node_id for c in result.contacts} == {fast_id, slow_id} and result.slow == 0
