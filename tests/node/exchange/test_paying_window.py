"""Paid GETs to one host through ``PaidPeers`` go in parallel, up to the host's paid window (issue 22).

A real `mu node` on a real `mu chain` is the host; the payer is the library
code a node uses (``PaidPeers`` over ``Payer``).  Many GETs are started at
once on one session: more than one is in flight, never more than the paid
window (specs/payments.md §Paid window); the requests that run into the end
of the free allowance together open one channel between them; each reports
the sats its own payment signed, and those add up to the payer's spent and
the host's earned, to the sat.  When the host closes the channel under a
window of requests, the window drains, the channel is given up once and one
new channel carries them all (specs/payments.md §Channel recovery).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from node.exchange.paying import PaidPeers, Tally
from node.ledger import LEDGER_FILE, Ledger
from node.transport import Session
from protocol.payments import ChannelStatus, Kind, Role, chunk_price, paid_window
from protocol.wire import GetChunk, Message
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import Fetcher, open_fetcher, seed_chunks, wait_for
from tests.helpers.node import REPO_ROOT, open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # sats per MiB: 64 per 16 KiB chunk
CHUNK_PRICE = chunk_price(CHUNK, PRICE)
ALLOWANCE = 3 * CHUNK_PRICE
WINDOW = paid_window(CHUNK_PRICE, ALLOWANCE)
COUNT = 24
HOST_ARGS = ["--price-get", str(PRICE), "--free-allowance", str(ALLOWANCE), "--expiry-window", "10",
             "--settle-poll", "0.2"]


def host_earned(host_dir: Path) -> int:
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        return int(ledger.earnings()["earned"])


def host_closing(host_dir: Path, channel_id: str) -> bool:
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        return len(ledger.settlements(channel_id)) > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Paying:
    """A host holding ``addresses`` and a payer's ``PaidPeers`` with a session to it."""

    host_dir: Path
    addresses: list[bytes]
    fetcher: Fetcher
    peers: PaidPeers
    session: Session


@asynccontextmanager
async def open_paying(tmp_path: Path) -> AsyncIterator[Paying]:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, COUNT, CHUNK)
    async with open_mu_chain(tmp_path / "chain", block_interval=0.5) as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            session = await fetcher.transport.connect(host.node_id, "127.0.0.1", host.port)
            yield Paying(host_dir=host_dir, addresses=addresses, fetcher=fetcher, session=session,
                         peers=PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000))


async def get_all(peers: PaidPeers, session: Session, addresses: list[bytes]) -> list[int]:
    """GET every address at once through ``peers``; the sats each request reports."""
    sats: list[int] = []

    async def get(address: bytes) -> None:
        reply, paid = await peers.request(session, Kind.GET, address, size=CHUNK)
        assert isinstance(reply, bytes) and len(reply) == CHUNK
        sats.append(paid)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for address in addresses:
                nursery.start_soon(get, address)
    assert len(sats) == len(addresses)
    return sats


async def test_paid_gets_to_one_host_overlap_within_its_window_and_add_up(tmp_path: Path) -> None:
    assert WINDOW == 4
    async with open_paying(tmp_path) as paying:
        session = paying.session
        in_flight, most = 0, 0
        get_chunk: Callable[..., Awaitable[bytes]] = session.get_chunk

        async def counted(*args: object, **kwargs: object) -> bytes:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                return await get_chunk(*args, **kwargs)
            finally:
                in_flight -= 1

        session.get_chunk = counted  # type: ignore[method-assign]
        sats = await get_all(paying.peers, session, paying.addresses)
        assert 1 < most <= WINDOW
        assert len(paying.fetcher.ledger.channels(role=Role.PAYER)) == 1  # one channel for all who needed it
        spent = paying.fetcher.ledger.earnings()["spent"]
        assert sum(sats) == spent == host_earned(paying.host_dir) == COUNT * CHUNK_PRICE - ALLOWANCE


async def test_a_channel_closed_under_a_window_is_replaced_once(tmp_path: Path) -> None:
    async with open_paying(tmp_path) as paying:
        ledger, host_dir = paying.fetcher.ledger, paying.host_dir
        sats = await get_all(paying.peers, paying.session, paying.addresses[:8])
        [first] = {c.channel_id for c in ledger.channels(role=Role.PAYER)}
        subprocess.run([sys.executable, "-m", "node", "--data-dir", str(host_dir), "channels", "close", first],
                       cwd=REPO_ROOT, check=True, capture_output=True)
        await wait_for(lambda: host_closing(host_dir, first))  # the running host took it up
        sats += await get_all(paying.peers, paying.session, paying.addresses[8:])
        channels = {c.channel_id: c.state for c in ledger.channels(role=Role.PAYER)}
        assert channels.pop(first) is ChannelStatus.CLOSING
        assert list(channels.values()) == [ChannelStatus.OPEN]
        # The refused payments were taken back: no request reports them, no ledger counts them.
        spent = ledger.earnings()["spent"]
        assert sum(sats) == spent == host_earned(host_dir) == COUNT * CHUNK_PRICE - ALLOWANCE


async def test_a_cancelled_paid_request_is_recorded_if_it_left_and_signs_nothing_if_it_did_not(tmp_path: Path) -> None:
    """A request cancelled once in the send queue has paid: our record of it is written at once,
    not left for some later request.  One cancelled while it waits for room in the send queue
    has signed nothing (specs/payments.md §Paid window)."""
    async with open_paying(tmp_path) as paying:
        session, ledger, host_dir = paying.session, paying.fetcher.ledger, paying.host_dir
        await get_all(paying.peers, session, paying.addresses[:8])  # past the free allowance: paid from here
        spent = ledger.earnings()["spent"]
        await wait_for(lambda: host_earned(host_dir) == spent)

        send = session._send
        tally = Tally()
        with trio.CancelScope() as scope:
            async def send_then_cancel(message: Message) -> None:
                await send(message)
                if isinstance(message, GetChunk):
                    scope.cancel()  # the request is queued: it leaves with its payment

            session._send = send_then_cancel  # type: ignore[method-assign]
            await paying.peers.request(session, Kind.GET, paying.addresses[8], size=CHUNK, tally=tally)
        del session._send
        assert scope.cancelled_caught
        paid = ledger.earnings()["spent"]
        assert paid > spent  # recorded without another request on the link
        assert tally.signed == paid - spent  # what no answer reports, the caller's tally counts
        await wait_for(lambda: host_earned(host_dir) == paid)

        waiting = trio.Event()

        async def no_room() -> None:
            waiting.set()
            await trio.sleep_forever()

        link = paying.peers._links[session.peer_node_id]
        signed = link.paid
        session.can_queue = lambda: False  # type: ignore[method-assign]
        session.queue_room = no_room  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            async def ask() -> None:
                await paying.peers.request(session, Kind.GET, paying.addresses[9], size=CHUNK, tally=tally)

            nursery.start_soon(ask)
            await waiting.wait()
            nursery.cancel_scope.cancel()
        del session.can_queue, session.queue_room
        assert link.paid == signed and not link.journal.unrecorded and ledger.earnings()["spent"] == paid
        assert tally.signed == paid - spent
        sats = await get_all(paying.peers, session, paying.addresses[9:12])
        assert ledger.earnings()["spent"] == paid + sum(sats)
        await wait_for(lambda: host_earned(host_dir) == paid + sum(sats))
