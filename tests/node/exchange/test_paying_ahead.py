"""A channel an operation will need is funded while the host's free allowance lasts (specs/payments.md
§Channel recovery, "Funding ahead").

Funded only once a request was refused for payment, a channel held every
request to its host for the funding, its confirmation and OPEN_CHANNEL;
from three hosts at once the fundings went one after another, and the last
host waited for all three (issue 22).  A real `mu node` on a real
`mu chain` (mining a block at once for a transaction) is the host; the
payer is the library code a node uses (``PaidPeers`` over ``Payer``).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import trio

from node.exchange.paying import AHEAD_FACTOR, PaidPeers
from node.files.network import NetworkService
from node.ledger import LEDGER_FILE, Ledger
from protocol.payments import ChannelStatus, Kind, Role, chunk_price
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import Fetcher, open_fetcher, seed_chunks, wait_for
from tests.helpers.node import MuNode, open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per 16 KiB chunk
FREE_CHUNKS = 6
ALLOWANCE = FREE_CHUNKS * chunk_price(CHUNK, PRICE)
HOST_ARGS = ["--price-get", str(PRICE), "--free-allowance", str(ALLOWANCE)]


def payer_channels(fetcher: Fetcher) -> dict[str, ChannelStatus]:
    return {c.channel_id: c.state for c in fetcher.ledger.channels(role=Role.PAYER)}


def host_earned(host: MuNode) -> int:
    with Ledger.open(host.data_dir / LEDGER_FILE) as ledger:
        return int(ledger.earnings()["earned"])


async def test_a_big_fetch_funds_its_channel_within_the_allowance_and_pays_on_it(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 5 * FREE_CHUNKS, CHUNK)
    async with open_mu_chain(tmp_path / "chain", mine=True) as chain, trio.open_nursery() as nursery:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000, nursery=nursery)
            session = await fetcher.transport.connect(host.node_id, "127.0.0.1", host.port)
            rest = len(addresses) * CHUNK
            assert chunk_price(rest, PRICE) >= AHEAD_FACTOR * ALLOWANCE  # a fetch well past the allowance

            await peers.request(session, Kind.GET, addresses[0], size=CHUNK, more=rest - CHUNK)
            # One free request answered, five more free to come: the funding goes out now, before any is refused.
            with trio.fail_after(60):
                await wait_for(lambda: payer_channels(fetcher))
            [ahead] = payer_channels(fetcher)
            link = await peers.link(session)
            assert link.channel is None  # not the link's yet: no request may sign on it before the host knows it

            with trio.fail_after(120):
                for n, address in enumerate(addresses[1:], 2):
                    reply, _ = await peers.request(session, Kind.GET, address, size=CHUNK, more=rest - n * CHUNK)
                    assert isinstance(reply, bytes) and len(reply) == CHUNK
            # The channel funded ahead is the one paid on: no second funding.
            assert payer_channels(fetcher) == {ahead: ChannelStatus.OPEN}
            assert str(link.channel_id) == ahead
            spent = fetcher.ledger.earnings()["spent"]
            assert spent == host_earned(host) == chunk_price(rest, PRICE) - ALLOWANCE
        nursery.cancel_scope.cancel()


async def test_a_fetch_the_allowance_may_cover_funds_nothing_ahead(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, FREE_CHUNKS, CHUNK)
    async with open_mu_chain(tmp_path / "chain", mine=True) as chain, trio.open_nursery() as nursery:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000, nursery=nursery)
            session = await fetcher.transport.connect(host.node_id, "127.0.0.1", host.port)
            # Three times the allowance is still under AHEAD_FACTOR times it: shared by hosts, it may all be free.
            more = 3 * FREE_CHUNKS * CHUNK
            assert chunk_price(more, PRICE) < AHEAD_FACTOR * ALLOWANCE
            for address in addresses:
                await peers.request(session, Kind.GET, address, size=CHUNK, more=more)
            assert not peers._ahead  # no funding started
            assert payer_channels(fetcher) == {}  # nothing funded: the allowance covered it all
            assert fetcher.ledger.earnings()["spent"] == host_earned(host) == 0
        nursery.cancel_scope.cancel()


async def test_an_adds_puts_say_what_is_still_to_store() -> None:
    """``mu add``'s paid PUTs carry the rest of the add (file size times replicas) as ``more``."""
    asked: list[tuple[Kind, int]] = []

    class Peers:
        async def request(self, session: object, kind: Kind, address: bytes, data: object = None, *,
                          more: int = 0) -> tuple[object, int]:
            asked.append((kind, more))
            return "stored", 7

    spent = [0]
    put = NetworkService._counted_put(SimpleNamespace(paid=Peers()), spent, 3 * 100)  # type: ignore[arg-type]
    for _ in range(3):
        assert await put(SimpleNamespace(), bytes(32), bytes(100)) == "stored"  # type: ignore[arg-type]
    assert asked == [(Kind.PUT, 200), (Kind.PUT, 100), (Kind.PUT, 0)]
    assert spent == [21]
