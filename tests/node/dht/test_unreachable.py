"""A closed port's ICMP error fails the request that it quotes at once (specs/dht.md §6 Lookups,
"Unreachable addresses").

Real DHT nodes on UDP over loopback, real time: a node whose process is gone
(its port closed, its host up) is known dead from the host's ICMP port
unreachable error, within a round trip, not after a request timeout; the
address is then silent as after a timeout.  A stopped replica candidate so
costs a placement view, and so an upload, nearly nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from node.dht import NoReply, open_dht
from protocol.identity import Identity
from tests.helpers.network import run_node

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's")

# Far longer than the test may take: only the ICMP error can end the requests in time.
TIMEOUT = 60.0


async def test_a_request_to_a_closed_port_fails_at_once_and_the_address_is_silent() -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as gone:
        await gone.bind(("127.0.0.1", 0))
        address = gone.getsockname()
    async with open_dht(Identity(os.urandom(32)), request_timeout=TIMEOUT) as dht:
        with trio.fail_after(TIMEOUT / 4):
            with pytest.raises(NoReply, match="unreachable"):
                await dht.rpc.ping(address)
            with pytest.raises(NoReply, match="did not answer"):  # silent now: not even sent
                await dht.rpc.ping(address)


async def test_a_stopped_node_leaves_an_exact_view_at_once(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        nodes = [await nursery.start(run_node, tmp_path / f"node{i}", TIMEOUT) for i in range(4)]
        for node in nodes[1:]:
            await node.dht.bootstrap([("127.0.0.1", nodes[0].dht.port)])
        searcher, stopped = nodes[0], nodes[3]
        table = searcher.dht.neighbours.table
        assert table.get(stopped.identity.node_id) is not None
        stopped.scope.cancel()  # its sockets close; the host (loopback) answers for the port
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(TIMEOUT / 4):
            view = await searcher.dialer().view(os.urandom(32))
        assert set(view.node_ids) == {n.identity.node_id for n in nodes[1:3]} and view.complete
        assert table.get(stopped.identity.node_id) is None
        nursery.cancel_scope.cancel()
