"""Settlement on a real chain: the host closes past a threshold and before a
deadline, by itself; the payer refunds an unused channel after expiry; the
node stops cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path

from node.exchange import ChainView
from node.ledger import LEDGER_FILE, Ledger
from node.exchange.settlement import SettlementConfig, SettlementWatcher
from protocol.bitcoin.channel import close_deadline
from protocol.payments import ChannelStatus, SettlementStatus, chunk_price
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import address_balance, open_fetcher, seed_chunks, wait_for
from tests.helpers.node import open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per chunk
THRESHOLD = 1_000


def settlement_state(host_dir: Path, channel: str) -> str | None:
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        rows = ledger.settlements(channel)
    return str(rows[-1].state) if rows else None


async def test_threshold_and_deadline_closes_and_payer_refund(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 24, CHUNK)
    price = chunk_price(CHUNK, PRICE)
    async with open_mu_chain(tmp_path / "chain") as chain:
        args = ["--price-get", str(PRICE), "--free-allowance", "0", "--expiry-window", "10",
                "--settle-threshold", str(THRESHOLD), "--settle-poll", "0.2"]
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            start = await address_balance(chain.rpc, host.address)

            # Past the threshold: the host closes by itself.
            channel_a = await fetcher.open_channel(link, capacity=30_000)
            for address in addresses[:16]:
                await fetcher.payer.get(link, address, expected_size=CHUNK)
            assert 16 * price >= THRESHOLD
            await wait_for(lambda: settlement_state(host_dir, str(channel_a)) == "broadcast")
            await fetcher.mine(1)
            await wait_for(lambda: settlement_state(host_dir, str(channel_a)) == "confirmed")
            assert await address_balance(chain.rpc, host.address) - start == 16 * price

            # Below the threshold but at its deadline: closed by itself too.
            tip = int(await chain.rpc.call("getblockcount"))
            channel_b = await fetcher.open_channel(link, capacity=30_000, expiry_blocks=20)
            for address in addresses[16:21]:  # 320 sats: above dust, below the threshold
                await fetcher.payer.get(link, address, expected_size=CHUNK)
            assert settlement_state(host_dir, str(channel_b)) is None
            deadline = close_deadline(tip + 20)
            await fetcher.mine(deadline - 1 - int(await chain.rpc.call("getblockcount")))
            await wait_for(lambda: settlement_state(host_dir, str(channel_b)) == "broadcast")
            await fetcher.mine(1)
            await wait_for(lambda: settlement_state(host_dir, str(channel_b)) == "confirmed")
            assert await address_balance(chain.rpc, host.address) - start == 21 * price

            # A channel never paid through: the payer takes it back after expiry.
            tip = int(await chain.rpc.call("getblockcount"))
            channel_c = await fetcher.open_channel(link, capacity=25_000, expiry_blocks=20)
            watcher = SettlementWatcher(ledger=fetcher.ledger, chain=ChainView(fetcher.rpc), book=None,
                                        payer_key=fetcher.payer.key, refund_script=fetcher.wallet.script_pubkey(),
                                        config=SettlementConfig())
            await watcher.run_once()
            assert fetcher.ledger.settlements(str(channel_c)) == []  # not before expiry
            await fetcher.mine(tip + 20 - int(await chain.rpc.call("getblockcount")))
            before = await fetcher.wallet.balance()
            await watcher.run_once()
            refund = fetcher.ledger.settlements(str(channel_c))
            assert [r.kind for r in refund] == ["refund"]
            await fetcher.mine(1)
            await watcher.run_once()
            record = fetcher.ledger.channel(str(channel_c))
            assert record is not None and record.state == "refunded"
            assert fetcher.ledger.settlements(str(channel_c))[-1].state == "confirmed"
            assert await fetcher.wallet.balance() - before == refund[0].amount
            assert 25_000 - int(refund[0].amount) < 1_000  # only a small fee kept by miners

            with Ledger.open(host_dir / LEDGER_FILE) as ledger:
                report = ledger.earnings()
                states = {c.channel_id: c.state for c in ledger.channels()}
            assert report["settled"] == report["earned"] == 21 * price
            assert states[str(channel_a)] == states[str(channel_b)] == "closed"
            # SIGTERM: a clean stop that removes node.json.
            assert await host.stop() == 0
            assert not (host_dir / "node.json").exists()


async def test_a_refund_sent_but_not_recorded_is_recorded_after_a_restart(tmp_path: Path) -> None:
    """A crash after ``sendrawtransaction`` and before the settlement row: the next pass
    finds its own refund on chain, records it and ends ``refunded``, not ``closed``
    (specs/payments.md §Settlement)."""
    host_dir = tmp_path / "host"
    seed_chunks(host_dir, 1, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, ["--expiry-window", "10"]) as host, \
                open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            tip = int(await chain.rpc.call("getblockcount"))
            channel = await fetcher.open_channel(link, capacity=25_000, expiry_blocks=20)
            await fetcher.mine(tip + 20 - int(await chain.rpc.call("getblockcount")))
            watcher = SettlementWatcher(ledger=fetcher.ledger, chain=ChainView(fetcher.rpc), book=None,
                                        payer_key=fetcher.payer.key, refund_script=fetcher.wallet.script_pubkey(),
                                        config=SettlementConfig())
            # What the pass that crashed left: the channel marked refunding, its
            # refund sent and mined, no settlement row.
            record = fetcher.ledger.channel(str(channel))
            assert record is not None
            fetcher.ledger.set_channel_state(str(channel), ChannelStatus.REFUNDING)
            refund, amount = watcher.refund_for(record)
            await fetcher.rpc.call("sendrawtransaction", refund.hex())
            await fetcher.mine(1)
            await watcher.run_once()
            rows = fetcher.ledger.settlements(str(channel))
            assert [(r.kind, r.txid, r.amount) for r in rows] == [("refund", refund.txid_hex(), amount)]
            await watcher.run_once()
            record = fetcher.ledger.channel(str(channel))
            assert record is not None and record.state is ChannelStatus.REFUNDED
            assert fetcher.ledger.settlements(str(channel))[-1].state is SettlementStatus.CONFIRMED
