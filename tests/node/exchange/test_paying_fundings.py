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
from types import SimpleNamespace

import trio

from node.exchange import FundedChannel
from node.exchange.paying import PaidPeers
from node.ledger import LEDGER_FILE, Ledger
from protocol.bitcoin import BadKeyError, PrivateKey
from protocol.payments import ChannelStatus, Kind, Role, chunk_price
from protocol.payments.messages import ChannelId
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


async def test_a_host_key_off_the_curve_fails_its_own_funding_not_the_groups() -> None:
    """A host's terms may name a payment key that is no secp256k1 point (only its form is checked)."""
    good_key = PrivateKey(bytes(31) + b"\x01").public_key.data
    bad_key = b"\x02" + bytes(32)  # x = 0 is on no point of the curve
    sent: list[list[bytes]] = []

    class Payer:
        balance = None

        async def fund_many(self, orders: list[tuple[object, int, int]], wallet: object) -> list[FundedChannel]:
            sent.append([link.host for link, _, _ in orders])  # type: ignore[attr-defined]
            return [FundedChannel(channel_id=ChannelId(txid=bytes(32), vout=i), params=None)  # type: ignore[arg-type]
                    for i in range(len(orders))]

        def take(self, link: object, funded: FundedChannel) -> None:
            pass

    class Chain:
        async def call(self, method: str, *args: object) -> object:
            assert method == "getblockcount"
            return 200

    peers = PaidPeers(Payer(), wallet=None, rpc=Chain())  # type: ignore[arg-type]

    def link(host: bytes, key: bytes) -> SimpleNamespace:
        return SimpleNamespace(host=host, terms=SimpleNamespace(payment_pubkey=key, expiry_window=36))

    results: dict[bytes, object] = {}

    async def fund(host: bytes, key: bytes) -> None:
        try:
            results[host] = await peers._fund(link(host, key), 30_000)  # type: ignore[arg-type]
        except BadKeyError as exc:
            results[host] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fund, b"g" * 20, good_key)
        nursery.start_soon(fund, b"b" * 20, bad_key)
        nursery.start_soon(fund, b"h" * 20, good_key)
    assert [sorted(group) for group in sent] == [[b"g" * 20, b"h" * 20]]  # one transaction for the two good hosts
    assert isinstance(results[b"b" * 20], BadKeyError)
    assert isinstance(results[b"g" * 20], FundedChannel) and isinstance(results[b"h" * 20], FundedChannel)
