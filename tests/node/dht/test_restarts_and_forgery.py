"""Real ``mu node`` processes: forged contacts stay out of the saved table, and restarts rejoin (issue 20).

Forgery: raw UDP sockets on 127.0.0.1 send a node requests claiming 500 made-up
node IDs, from one IP:port and from many ports of one address, and answer the
node's pings with whatever ID they like.  The node's table (live and saved)
holds at most one contact per IP:port and at most ``MAX_PER_PREFIX_PER_TABLE``
from the address's /24.  Restarted with the saved forgers silent (they hear the
node's ping and never answer), the node listens before its rejoin gives up on
them (specs/dht.md §5.3 Address limits, §5.4 Refresh and bootstrap).

Restart: a devnet of four nodes, stopped and started again on new ports with
the bootstrap flag pointing at the first node's new port, finds itself again
although every saved contact is dead; each node listens before its rejoin ends.

Nothing here is a speed bound (load on the test machine stretches every wall
clock): "listens at once" is checked as an order, the node's "listening" log
line before its "rejoin" line, which a start-up that waited for the rejoin
reverses however fast or slow the machine.  Waits for other processes are
bounded by ``SETTLE_BOUND``, which a rejoin put off until a refresh
(``BUCKET_REFRESH_INTERVAL``) would exceed many times over.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import msgpack
import pytest
import trio

from node.api.control import ControlClient
from node.dht import TABLE_FILE, open_dht
from protocol.identity import Identity
from protocol.kademlia.routing import BUCKET_REFRESH_INTERVAL, MAX_PER_PREFIX_PER_TABLE
from protocol.kademlia.wire import Request, decode_datagram, encode_request
from tests.helpers.chain import open_mu_chain
from tests.helpers.node import MuNode, log_lines_since, log_size, open_mu_node

FORGED_IDS = 500
MANY_PORTS = 50
#: A hang guard for waits on other processes, generous against a loaded machine; a
#: rejoin that waited for a bucket refresh would still overrun it sixty times.
SETTLE_BOUND = 60.0
assert SETTLE_BOUND * 60 <= BUCKET_REFRESH_INTERVAL
POLL = 0.05  # polling another process's RPC, always bounded by fail_after
#: node/runtime/daemon.py logs this once it listens, node/dht/_ops.py the other when the rejoin's pings are done.
LISTENING = re.compile(r" mu\.node INFO node [0-9a-f]{40} listening on ")
REJOINED = re.compile(r" mu\.dht INFO rejoin: (\d+) of (\d+) saved contacts answered")


class Forger:
    """A UDP socket that claims the IDs it is given, one per request, and answers pings with the next one."""

    def __init__(self, sock: trio.socket.SocketType, ids: list[bytes]) -> None:
        self.sock = sock
        self.ids = ids
        self.pinged = trio.Event()
        self._next = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return host, port

    def next_id(self) -> bytes:
        node_id = self.ids[self._next % len(self.ids)]
        self._next += 1
        return node_id

    async def flood(self, target: tuple[str, int], stop: trio.Event) -> None:
        """Send a request for every ID, then keep claiming IDs until told to stop."""
        for node_id in self.ids:
            await self.sock.sendto(encode_request(secrets.token_bytes(20), "ping", [node_id]), target)
        while not stop.is_set():
            with trio.move_on_after(POLL):
                await stop.wait()
            await self.sock.sendto(encode_request(secrets.token_bytes(20), "ping", [self.next_id()]), target)

    async def answer(self) -> None:
        while True:
            data, address = await self.sock.recvfrom(65536)
            message = decode_datagram(data)
            if isinstance(message, Request):
                self.pinged.set()
                await self.sock.sendto(b"\x01" + message.msg_id + msgpack.packb(self.next_id()), address)

    async def hear_in_silence(self, sender: tuple[str, int], heard: trio.Event) -> None:
        """Take requests and never answer: a dead contact ``sender``'s ping waits on until its timeout."""
        while True:
            data, address = await self.sock.recvfrom(65536)
            if address == sender and isinstance(decode_datagram(data), Request):
                heard.set()


async def live_peers(node: MuNode) -> list[dict[str, object]]:
    reply = await ControlClient.from_data_dir(node.data_dir).call("GET", "peers")
    return list(reply["peers"])  # type: ignore[index, call-overload]


async def wait_for(check: Callable[[], Awaitable[bool]], bound: float) -> None:
    with trio.fail_after(bound):
        while not await check():
            await trio.sleep(POLL)


def saved_addresses(node: MuNode) -> list[tuple[str, int]]:
    doc = json.loads((node.data_dir / TABLE_FILE).read_text())
    return [(c["host"], c["port"]) for c in doc["contacts"]]


async def rejoin_after_listening(node: MuNode, log_offset: int) -> tuple[int, int]:
    """Wait for the rejoin line of the start logged past ``log_offset``; return (answered, saved).

    Fails unless the node logged that it listens before it logged the rejoin's
    outcome: a start-up that waited for the rejoin (dead saved contacts and all)
    logs them the other way round (specs/dht.md §5.4).
    """
    lines: list[str] = []

    async def rejoin_logged() -> bool:
        nonlocal lines
        lines = log_lines_since(node, log_offset)
        return any(REJOINED.search(line) for line in lines)

    await wait_for(rejoin_logged, SETTLE_BOUND)
    listening = [i for i, line in enumerate(lines) if LISTENING.search(line)]
    rejoined = [i for i, line in enumerate(lines) if REJOINED.search(line)]
    assert listening and listening[0] < rejoined[0], f"the rejoin ended before the node listened: {lines}"
    outcome = REJOINED.search(lines[rejoined[0]])
    assert outcome is not None
    return int(outcome[1]), int(outcome[2])


@pytest.mark.slow
async def test_forged_contacts_stay_out_and_the_restart_listens_at_once(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain") as chain, \
            open_dht(Identity(secrets.token_bytes(32))) as helper, \
            open_mu_node(tmp_path / "victim", chain, ["--bootstrap", f"127.0.0.1:{helper.port}"],
                         loopback_devnet=False) as victim:
        target = ("127.0.0.1", int(victim.extra["dht_port"]))  # type: ignore[call-overload]
        ids = [secrets.token_bytes(20) for _ in range(FORGED_IDS)]
        # Half the IDs from one IP:port, half spread over many ports of the same address.
        sockets = [trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) for _ in range(1 + MANY_PORTS)]
        half = FORGED_IDS // 2
        per_port = half // MANY_PORTS
        forgers = [Forger(sockets[0], ids[:half])] + [
            Forger(sockets[1 + i], ids[half + i * per_port: half + (i + 1) * per_port]) for i in range(MANY_PORTS)]
        for sock in sockets:
            await sock.bind(("127.0.0.1", 0))
        forged_addresses = {s.getsockname() for s in sockets}
        async with trio.open_nursery() as nursery:
            for forger in forgers:
                nursery.start_soon(forger.answer)
            # Every forger floods until the victim has checked it with a ping of its own
            # (or, had it taken requesters on their word, listed it).
            stop = trio.Event()

            async def every_forger_met() -> bool:
                listed = {(p["host"], p["port"]) for p in await live_peers(victim)}
                return all(f.pinged.is_set() or f.address in listed for f in forgers)

            async with trio.open_nursery() as floods:
                for forger in forgers:
                    floods.start_soon(forger.flood, target, stop)
                await wait_for(every_forger_met, 60)
                stop.set()
            peers = await live_peers(victim)
            addresses = [(p["host"], p["port"]) for p in peers]
            assert len(addresses) == len(set(addresses))
            assert sum(a in forged_addresses for a in addresses) <= MAX_PER_PREFIX_PER_TABLE
            assert await victim.stop() == 0  # saves the table
            nursery.cancel_scope.cancel()
        saved = saved_addresses(victim)
        assert len(saved) == len(set(saved)), "two saved contacts share an IP:port"
        assert sum(a in forged_addresses for a in saved) <= MAX_PER_PREFIX_PER_TABLE
        assert any(a in forged_addresses for a in saved)  # the restart does meet dead saved contacts

        # Every forged contact is dead now (its socket hears the node's ping and never
        # answers): the node listens before its rejoin is done waiting on them.
        log_offset = log_size(victim)
        await victim.restart()
        async with trio.open_nursery() as nursery:
            # Its pings wait in the sockets' buffers; only those from its new port count.
            heard = trio.Event()
            restarted = ("127.0.0.1", int(victim.extra["dht_port"]))  # type: ignore[call-overload]
            for forger in forgers:
                nursery.start_soon(forger.hear_in_silence, restarted, heard)
            with trio.fail_after(SETTLE_BOUND):
                await heard.wait()  # the restarted node pinged a saved forger
            answered, pinged = await rejoin_after_listening(victim, log_offset)
            nursery.cancel_scope.cancel()
        for sock in sockets:
            sock.close()
        # Only the helper (if it was saved) answered; every silent forger's ping timed out.
        assert (answered, pinged) == (int(("127.0.0.1", helper.port) in saved), len(saved))

        # The dead ones leave; the bootstrap peer is found.
        async def rejoined() -> bool:
            peers = await live_peers(victim)
            return [bytes.fromhex(str(p["node_id"])) for p in peers] == [helper.node_id]

        await wait_for(rejoined, SETTLE_BOUND)


@pytest.mark.slow
async def test_a_devnet_restarted_on_new_ports_finds_itself_again(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain") as chain, AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_mu_node(tmp_path / "n0", chain))
        bootstrap = ["--bootstrap", f"127.0.0.1:{first.extra['dht_port']}"]
        nodes = [first] + [await stack.enter_async_context(open_mu_node(tmp_path / f"n{i}", chain, bootstrap))
                           for i in range(1, 4)]

        async def all_know_each_other() -> bool:
            for node in nodes:
                known = {bytes.fromhex(str(p["node_id"])) for p in await live_peers(node)}
                if known != {n.node_id for n in nodes} - {node.node_id}:
                    return False
            return True

        await wait_for(all_know_each_other, SETTLE_BOUND)
        old_ports = {n.extra["dht_port"] for n in nodes}
        for node in nodes:
            assert await node.stop() == 0
        # Each saved the others, or most of them: a lookup request that times out on a loaded
        # machine drops a live contact (node/dht/_ops.py, run_lookup), and the table saved is the one held then.
        saved = [len(saved_addresses(n)) for n in nodes]
        assert all(1 <= count <= 3 for count in saved), saved

        # All on new ports; every saved contact is dead; the bootstrap flag names the first's new port.
        log_offsets = [log_size(n) for n in nodes]
        await first.restart()
        for node in nodes[1:]:
            node.argv[node.argv.index("--bootstrap") + 1] = f"127.0.0.1:{first.extra['dht_port']}"
            await node.restart()
        assert not {n.extra["dht_port"] for n in nodes} & old_ports
        # Each listened before its pings to the dead saved contacts were done, and none answered.
        for node, log_offset, count in zip(nodes, log_offsets, saved):
            assert await rejoin_after_listening(node, log_offset) == (0, count)
        # The ones with a bootstrap flag joined through it; the first learns them as they do.
        await wait_for(all_know_each_other, SETTLE_BOUND)
