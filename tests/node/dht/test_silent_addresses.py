"""A dead node costs one timeout, not one per request (specs/dht.md §6 Iterative lookup, "Silent addresses").

A real DHT node on loopback asks a real UDP socket that does not answer.
Time is trio's ``MockClock`` (``mock_clock``): it moves only when the test
jumps it, so "no wait at all" is exact.
"""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from node.dht import DhtNode, open_dht
from node.dht._rpc import SILENT_SECONDS, NoReply
from protocol.identity import Identity
from protocol.kademlia import Contact
from protocol.kademlia.wire import PING, Request, Response, decode_datagram, encode_request, encode_response

TIMEOUT = 2.0


async def test_a_silent_address_is_not_asked_again_until_it_speaks(mock_clock: trio.testing.MockClock) -> None:
    peer_id = os.urandom(20)
    async with open_dht(Identity(os.urandom(32)), request_timeout=TIMEOUT) as dht:
        peer = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with peer:
            await peer.bind(("127.0.0.1", 0))
            address = peer.getsockname()
            ours = ("127.0.0.1", dht.port)
            outcome: list[BaseException] = []

            async def ping() -> None:
                try:
                    await dht.rpc.ping(address)
                except NoReply as exc:
                    outcome.append(exc)

            # 1. Not answered: the request waits out its timeout.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping)
                data, _ = await peer.recvfrom(2048)  # it was sent
                assert isinstance(decode_datagram(data), Request)
                await trio.testing.wait_all_tasks_blocked()  # the request is waiting for its reply
                mock_clock.jump(TIMEOUT)
            assert "timed out" in str(outcome.pop())

            # 2. Silent now: every request fails at once, without waiting.
            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(ping)
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()  # a request still waiting would be the bug
            assert len(outcome) == 5 and all("did not answer" in str(exc) for exc in outcome)
            assert trio.current_time() == start
            outcome.clear()

            # 3. The address speaks (a ping of its own, answered): it is asked again and answers.
            await peer.sendto(encode_request(os.urandom(20), PING, [peer_id]), ours)
            while not isinstance(decode_datagram((await peer.recvfrom(2048))[0]), Response):
                pass  # the node may ping an unknown requester back first; that is not our answer

            async def answer_pings() -> None:  # ours, and any the node sends to check who we are
                while True:
                    data, source = await peer.recvfrom(2048)
                    message = decode_datagram(data)
                    if isinstance(message, Request) and message.name == PING:
                        await peer.sendto(encode_response(message.msg_id, peer_id), source)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_pings)
                assert await dht.rpc.ping(address) == peer_id
                nursery.cancel_scope.cancel()


async def test_silence_ends_after_its_time(mock_clock: trio.testing.MockClock) -> None:
    async with open_dht(Identity(os.urandom(32)), request_timeout=TIMEOUT) as dht:
        peer = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with peer:
            await peer.bind(("127.0.0.1", 0))
            address = peer.getsockname()
            for _ in range(2):  # a timeout, then (after SILENT_SECONDS) another real attempt
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_expect_no_reply, dht, address)
                    await peer.recvfrom(2048)  # the request was really sent
                    await trio.testing.wait_all_tasks_blocked()  # and waits for its reply
                    mock_clock.jump(TIMEOUT)
                with pytest.raises(NoReply, match="did not answer"):
                    await dht.rpc.ping(address)
                mock_clock.jump(SILENT_SECONDS)


async def _expect_no_reply(dht: object, address: tuple[str, int]) -> None:
    with pytest.raises(NoReply, match="timed out"):
        await dht.rpc.ping(address)  # type: ignore[attr-defined]


async def test_a_node_restarted_on_a_new_port_replaces_its_dead_address(mock_clock: trio.testing.MockClock) -> None:
    # Its peers knew it at the old port; the first answer from the new one makes them ping the old one,
    # which is silent, so the new address takes the ID over (specs/dht.md §5.2 step 2).  A node whose
    # old address still answers with its ID would keep it: an ID cannot be taken by naming it.
    moving = Identity(os.urandom(32))
    async with open_dht(Identity(os.urandom(32)), request_timeout=TIMEOUT) as peer:
        async with open_dht(moving, request_timeout=TIMEOUT) as before:
            await before.bootstrap([("127.0.0.1", peer.port)])
            await trio.testing.wait_all_tasks_blocked()
            old = peer.neighbours.table.get(moving.node_id)
            assert old is not None and old.port == before.port
        # Its old port is held by a socket that reads nothing: like a host that is down, it sends
        # no ICMP error back (a closed port does: test_unreachable.py), so only silence tells.
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as hole:
            await hole.bind(("127.0.0.1", old.port))
            await _moved_after_silence(peer, moving, old, mock_clock)


async def _moved_after_silence(peer: DhtNode, moving: Identity, old: Contact, mock_clock: trio.testing.MockClock) -> None:
    async with open_dht(moving, request_timeout=TIMEOUT) as after:
        assert after.port != old.port
        await after.bootstrap([("127.0.0.1", peer.port)])  # the peer pings the requester back: it answers
        await trio.testing.wait_all_tasks_blocked()  # the peer's ping of the old port waits for its reply
        assert peer.neighbours.table.get(moving.node_id) == old
        mock_clock.jump(TIMEOUT)
        await trio.testing.wait_all_tasks_blocked()
        moved = peer.neighbours.table.get(moving.node_id)
        assert moved is not None and moved.port == after.port
        record = await peer.get_contact(moving.node_id)
        assert record is not None and record.udp_port == after.port
