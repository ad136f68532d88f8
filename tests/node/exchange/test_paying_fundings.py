"""Channel fundings asked for together go in one transaction (specs/payments.md §Channel recovery).

A fetch from three hosts needed three channels at about the same moment,
and their fundings went one after another, each with its own wallet scan,
broadcast and ledger write: the last host waited for all three (issue 22).
On a chain that mines every ten minutes, a second funding found only the
first one's unconfirmed change and waited a block.  Two real `mu node`
hosts on a real `mu chain` here take two channels of one transaction.
"""

from __future__ import annotations

from pathlib import Path

import trio

from node.exchange.paying import PaidPeers
from node.ledger import LEDGER_FILE, Ledger
from protocol.payments import ChannelStatus, Kind, Role, chunk_price
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import open_fetcher, seed_chunks
from tests.helpers.node import MuNode, open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per 16 KiB chunk
HOST_ARGS = ["--price-get", str(PRICE), "--free-allowance", "0"]


def host_earned(host: MuNode) -> int:
    with Ledger.open(host.data_dir / LEDGER_FILE) as ledger:
        return int(ledger.earnings()["earned"])


async def test_two_channels_asked_for_together_are_funded_by_one_transaction(tmp_path: Path) -> None:
    chunks = {name: seed_chunks(tmp_path / name, 3, CHUNK) for name in ("a", "b")}
    async with open_mu_chain(tmp_path / "chain", mine=True) as chain, \
            open_mu_node(tmp_path / "a", chain, HOST_ARGS) as a, open_mu_node(tmp_path / "b", chain, HOST_ARGS) as b, \
            open_fetcher(tmp_path / "payer", chain) as fetcher:
        peers = PaidPeers(fetcher.payer, fetcher.wallet, fetcher.rpc, capacity=30_000)
        sessions = {name: await fetcher.transport.connect(host.node_id, "127.0.0.1", host.port)
                    for name, host in (("a", a), ("b", b))}

        links = {name: await peers.link(session) for name, session in sessions.items()}
        funded = {}

        async def fund(name: str) -> None:  # as two requests refused for payment at once do (``_open_channel``)
            funded[name] = await peers._fund(links[name], 30_000)
            await peers._announce(links[name], funded[name].channel_id)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fund, "a")
                nursery.start_soon(fund, "b")
            for name, session in sessions.items():
                for address in chunks[name]:
                    reply, _ = await peers.request(session, Kind.GET, address, size=CHUNK)
                    assert isinstance(reply, bytes) and len(reply) == CHUNK
        channels = fetcher.ledger.channels(role=Role.PAYER)
        assert {c.state for c in channels} == {ChannelStatus.OPEN} and len(channels) == 2
        assert {c.peer for c in channels} == {a.node_id.hex(), b.node_id.hex()}
        assert len({c.funding_txid for c in channels}) == 1  # one transaction
        assert sorted(c.funding_vout for c in channels) == [0, 1]
        assert {str(links[name].channel_id) for name in links} == {str(f.channel_id) for f in funded.values()}
        for host in (a, b):  # each host checked its own output (script, value) and took payments on it
            assert host_earned(host) == 3 * chunk_price(CHUNK, PRICE)
        assert fetcher.ledger.earnings()["spent"] == 6 * chunk_price(CHUNK, PRICE)
