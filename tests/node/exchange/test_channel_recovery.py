"""Must hold (issue 20): a channel the host refuses is given up and replaced; a refused payment is never spent.

A real `mu node` on a real `mu chain` (mining on its own) is the host; the
payer is the library code a node uses (``PaidPeers`` over ``Payer``).  The
host forgets the channel (its ledger row removed while it is stopped), or
closes it (``mu channels close ID``, or its settle threshold), while the
payer keeps fetching: every fetch still completes, on a new channel, and the
payer's ``spent`` equals what the host recorded as earned, to the sat
(specs/payments.md §Channel recovery).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from node.exchange import ChainView
from node.exchange.paying import PaidPeers
from node.exchange.settlement import SettlementConfig, SettlementWatcher
from node.ledger import LEDGER_FILE, Ledger
from node.transport import Session
from protocol.payments import ChannelStatus, Kind, PaymentErrorCode, RemotePaymentError, Role, chunk_price
from protocol.payments.payer import MAX_CHANNEL_OPENS_PER_PERIOD, SERVED_CHANNEL_TOTAL
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import Fetcher, open_fetcher, seed_chunks, wait_for
from tests.helpers.node import REPO_ROOT, MuNode, open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per 16 KiB chunk
HOST_ARGS = ["--price-get", str(PRICE), "--free-allowance", "0", "--expiry-window", "10", "--settle-poll", "0.2"]


def host_earned(host_dir: Path) -> int:
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        return int(ledger.earnings()["earned"])


def host_channel_state(host_dir: Path, channel_id: str) -> ChannelStatus | None:
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        record = ledger.channel(channel_id)
    return record.state if record is not None else None


def host_settlements(host_dir: Path, channel_id: str) -> int:
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        return len(ledger.settlements(channel_id))


def payer_channels(fetcher: Fetcher) -> dict[str, ChannelStatus]:
    return {c.channel_id: c.state for c in fetcher.ledger.channels(role=Role.PAYER)}


async def connect(fetcher: Fetcher, host: MuNode) -> Session:
    return await fetcher.transport.connect(host.node_id, "127.0.0.1", host.port)


async def fetch(peers: PaidPeers, session: Session, addresses: list[bytes], *, size: int = CHUNK) -> None:
    for address in addresses:
        reply, _ = await peers.request(session, Kind.GET, address)
        assert isinstance(reply, bytes) and len(reply) == size


async def test_a_channel_the_host_forgot_is_given_up_and_replaced(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 8, CHUNK)
    async with open_mu_chain(tmp_path / "chain", block_interval=0.5) as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000)
            await fetch(peers, await connect(fetcher, host), addresses[:4])
            [first] = payer_channels(fetcher)
            # The host loses its record of the channel (not its earnings) while it is stopped.
            assert await host.stop() == 0
            with sqlite3.connect(host_dir / LEDGER_FILE) as db:
                db.execute("DELETE FROM channels WHERE channel_id = ?", (first,))
            await host.restart()
            with trio.fail_after(120):
                await fetch(peers, await connect(fetcher, host), addresses[4:])
            channels = payer_channels(fetcher)
            assert channels.pop(first) is ChannelStatus.CLOSING  # refunded after its expiry by the watcher
            assert list(channels.values()) == [ChannelStatus.OPEN]
            assert fetcher.ledger.earnings()["spent"] == host_earned(host_dir) > 0


async def test_a_channel_the_host_closed_is_replaced_and_refused_payments_are_not_spent(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 8, CHUNK)
    price = chunk_price(CHUNK, PRICE)
    async with open_mu_chain(tmp_path / "chain", block_interval=0.5) as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000)
            session = await connect(fetcher, host)
            await fetch(peers, session, addresses[:3])
            [first] = payer_channels(fetcher)
            subprocess.run([sys.executable, "-m", "node", "--data-dir", str(host_dir), "channels", "close", first],
                           cwd=REPO_ROOT, check=True, capture_output=True)
            await wait_for(lambda: host_settlements(host_dir, first))  # the running host took it up

            # The bare payer, on the same session: the host refuses the closed
            # channel, and the refused payment is not counted as spent.
            link = await peers.link(session)
            with pytest.raises(RemotePaymentError) as refused:
                await fetcher.payer.get(link, addresses[3])  # priced at 1 MiB, as PaidPeers does: it owes
            assert refused.value.code == PaymentErrorCode.CHANNEL_EXPIRED
            spent = fetcher.ledger.earnings()["spent"]
            assert spent == host_earned(host_dir) >= 3 * price

            # The fetch goes on, on a new channel.
            with trio.fail_after(120):
                await fetch(peers, session, addresses[3:])
            channels = payer_channels(fetcher)
            assert channels.pop(first) is ChannelStatus.CLOSING
            assert list(channels.values()) == [ChannelStatus.OPEN]
            assert fetcher.ledger.earnings()["spent"] == host_earned(host_dir) > spent

            # Once the host's close is mined, the payer's watcher sees it on chain.
            await wait_for(lambda: host_channel_state(host_dir, first) is ChannelStatus.CLOSED)
            watcher = SettlementWatcher(ledger=fetcher.ledger, chain=ChainView(fetcher.rpc), book=None,
                                        payer_key=fetcher.payer.key, refund_script=fetcher.wallet.script_pubkey(),
                                        config=SettlementConfig())
            await watcher.run_once()
            assert payer_channels(fetcher)[first] is ChannelStatus.CLOSED


@pytest.mark.slow
async def test_the_settle_threshold_is_honoured_within_one_payment(tmp_path: Path) -> None:
    """The host stops taking payments on a channel at the payment that reaches its threshold, however long
    its watcher sleeps; the payer goes on with a new channel."""
    host_dir = tmp_path / "host"
    size = 256 * 1024
    addresses = seed_chunks(host_dir, 12, size)
    threshold = 5_000  # the first payment on a channel is 4,096 sats (priced at 1 MiB), the next ones 1,024
    args = ["--price-get", str(PRICE), "--free-allowance", "0", "--expiry-window", "10",
            "--settle-threshold", str(threshold), "--settle-poll", "30"]
    async with open_mu_chain(tmp_path / "chain", block_interval=0.5) as chain:
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000)
            with trio.fail_after(120):
                await fetch(peers, await connect(fetcher, host), addresses, size=size)
            with Ledger.open(host_dir / LEDGER_FILE) as ledger:
                totals = [c.total for c in ledger.channels(role=Role.PAYEE)]
            assert len(totals) >= 2
            # at most one payment past the threshold (a payment is one chunk's price at 1 MiB, as PaidPeers
            # signs it the first time on a channel)
            assert all(total < threshold + chunk_price(1 << 20, PRICE) for total in totals), totals
            assert fetcher.ledger.earnings()["spent"] == host_earned(host_dir) == sum(totals)


async def test_a_channel_waiting_for_confirmations_does_not_hold_up_another_hosts(tmp_path: Path) -> None:
    """Item 6 of issue 20: fundings are not serialised across their confirmation waits.  Host A wants 3
    confirmations, host B one: B's channel is funded while A's waits, and one block serves B."""
    slow_dir, quick_dir = tmp_path / "slow", tmp_path / "quick"
    slow_chunks, quick_chunks = seed_chunks(slow_dir, 1, CHUNK), seed_chunks(quick_dir, 1, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(slow_dir, chain, [*HOST_ARGS, "--min-confirmations", "3"]) as slow, \
                open_mu_node(quick_dir, chain, HOST_ARGS) as quick, \
                open_fetcher(tmp_path / "payer", chain, faucet_blocks=2) as fetcher:
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000)
            slow_session, quick_session = await connect(fetcher, slow), await connect(fetcher, quick)
            quick_done = trio.Event()

            async def quick_fetch() -> None:
                await fetch(peers, quick_session, quick_chunks)
                quick_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch, peers, slow_session, slow_chunks)
                nursery.start_soon(quick_fetch)
                # Both fundings go out without waiting for each other (in one transaction
                # or two: specs/payments.md §Channel recovery, "Fundings go in groups")...
                await wait_for(lambda: len(payer_channels(fetcher)) == 2)
                assert await mempool_size(fetcher, 1)
                await fetcher.mine(1)
                # ... and one block is all host B's channel waits for.
                with trio.fail_after(30):
                    await quick_done.wait()
                await fetcher.mine(2)
            assert fetcher.ledger.earnings()["spent"] == host_earned(slow_dir) + host_earned(quick_dir)


async def mempool_size(fetcher: Fetcher, size: int) -> bool:
    return len(await fetcher.rpc.call("getrawmempool")) >= size


async def test_a_funding_cut_short_by_a_request_timeout_is_announced_by_the_next_request(tmp_path: Path) -> None:
    """A fetch's request timeout cancels a request waiting for its channel's confirmations: the next
    request, on a new session too, announces that channel rather than pay on one the host never heard of
    (which it would refuse: UNKNOWN_CHANNEL, and a second funding)."""
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 2, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000)
            with trio.move_on_after(30) as timeout:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fetch, peers, await connect(fetcher, host), addresses[:1])
                    await wait_for(lambda: mempool_size(fetcher, 1))  # funded, waiting for a block
                    nursery.cancel_scope.cancel()  # the request timeout
            assert not timeout.cancelled_caught
            await fetcher.mine(1)
            with trio.fail_after(60):
                await fetch(peers, await connect(fetcher, host), addresses)
            assert list(payer_channels(fetcher).values()) == [ChannelStatus.OPEN]  # one funding
            assert fetcher.ledger.earnings()["spent"] == host_earned(host_dir) > 0


@pytest.mark.slow
async def test_channels_closed_at_the_threshold_are_replaced_past_the_budget_and_early_closes_are_not(
        tmp_path: Path) -> None:
    """specs/payments.md §Channel recovery, "Counted opens": each channel the host closes at its threshold
    after serving at least ``SERVED_CHANNEL_TOTAL`` is replaced without counting, more times than
    ``MAX_CHANNEL_OPENS_PER_PERIOD``; channels closed after less still run out of opens."""
    host_dir = tmp_path / "host"
    big, small = 256 * 1024, 16 * 1024
    price = 262_144  # sats per MiB: 65,536 per big chunk (>= SERVED_CHANNEL_TOTAL), 4,096 per small one
    served_chunks = seed_chunks(host_dir, MAX_CHANNEL_OPENS_PER_PERIOD + 2, big)
    early_chunks = seed_chunks(host_dir, MAX_CHANNEL_OPENS_PER_PERIOD + 1, small)
    # The host takes no payment on a channel once it holds 4,000 sats: each channel carries one chunk.
    args = ["--price-get", str(price), "--free-allowance", "0", "--expiry-window", "10",
            "--settle-threshold", "4000", "--settle-poll", "0.2"]
    assert chunk_price(big, price) >= SERVED_CHANNEL_TOTAL > chunk_price(small, price) >= 4_000
    async with open_mu_chain(tmp_path / "chain", block_interval=0.5) as chain:
        async with (open_mu_node(host_dir, chain, args) as host,
                    open_fetcher(tmp_path / "payer", chain, max_price_get=price) as fetcher):
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=200_000)
            session = await connect(fetcher, host)
            with trio.fail_after(240):
                for address in served_chunks:  # one channel each, the first one counted
                    reply, _ = await peers.request(session, Kind.GET, address, size=big)
                    assert isinstance(reply, bytes) and len(reply) == big
                assert len(payer_channels(fetcher)) == MAX_CHANNEL_OPENS_PER_PERIOD + 2
                # The first small chunk replaces a served channel (free); the next three are counted, as
                # the first channel was: the budget is spent, and the next early close ends the request.
                for address in early_chunks[:MAX_CHANNEL_OPENS_PER_PERIOD]:
                    reply, _ = await peers.request(session, Kind.GET, address, size=small)
                    assert isinstance(reply, bytes) and len(reply) == small
                with pytest.raises(RemotePaymentError) as refused:
                    await peers.request(session, Kind.GET, early_chunks[-1], size=small)
            assert refused.value.code == PaymentErrorCode.CHANNEL_EXPIRED
            channels = payer_channels(fetcher)
            assert len(channels) == 2 * MAX_CHANNEL_OPENS_PER_PERIOD + 2
            assert list(channels.values()).count(ChannelStatus.OPEN) == 0
            assert fetcher.ledger.earnings()["spent"] == host_earned(host_dir) == (
                len(served_chunks) * chunk_price(big, price) + MAX_CHANNEL_OPENS_PER_PERIOD * chunk_price(small, price))
