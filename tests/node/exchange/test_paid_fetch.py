"""Must hold: a paid fetch of 100 chunks from a `mu node`; both ledgers agree; the close settles on chain."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import trio

from node.ledger import LEDGER_FILE, Ledger
from protocol.payments import chunk_price
from tests.helpers.chain import REPO_ROOT, open_mu_chain
from tests.helpers.exchange import address_balance, open_fetcher, seed_chunks, wait_for
from tests.helpers.node import open_mu_node

CHUNK = 64 * 1024
PRICE = 1_000  # sats per MiB: 63 sats per 64 KiB chunk (62.5 rounded up)
ALLOWANCE = 500


def host_ledger(host_dir: Path) -> Ledger:
    return Ledger.open(host_dir / LEDGER_FILE)


async def test_fetch_100_chunks_both_ledgers_agree_and_close_pays_exactly(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 100, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        args = ["--price-get", str(PRICE), "--free-allowance", str(ALLOWANCE), "--settle-poll", "0.2"]
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            channel = await fetcher.open_channel(link, capacity=50_000)
            for address in addresses:
                data = await fetcher.payer.get(link, address, expected_size=CHUNK)
                assert hashlib.sha256(data).digest() == address
            expected = 100 * chunk_price(CHUNK, PRICE) - ALLOWANCE
            assert link.channel is not None and link.channel.total == expected
            payer_side = fetcher.ledger.channel(str(channel))
            assert payer_side is not None and payer_side.total == expected
            assert sum(p.amount for p in fetcher.ledger.payments(channel_id=str(channel))) == expected
            with host_ledger(host_dir) as ledger:
                host_side = ledger.channel(str(channel))
                assert host_side is not None and host_side.total == expected
                assert sum(p.amount for p in ledger.payments(channel_id=str(channel))) == expected
                assert ledger.earnings()["earned"] == expected

            before = await address_balance(chain.rpc, host.address)
            result = await trio.run_process(
                [sys.executable, "-m", "node", "--data-dir", str(host_dir), "channels", "close", str(channel)],
                cwd=str(REPO_ROOT), capture_stdout=True)
            assert b"marked closing" in result.stdout

            def settled(state: str) -> bool:
                with host_ledger(host_dir) as ledger:
                    return any(s.state == state for s in ledger.settlements(str(channel)))

            await wait_for(lambda: settled("broadcast"))
            await fetcher.mine(1)
            await wait_for(lambda: settled("confirmed"))

            def closed() -> bool:  # the watcher records the confirmation, then closes the channel
                with host_ledger(host_dir) as ledger:
                    record = ledger.channel(str(channel))
                    return record is not None and record.state == "closed"

            await wait_for(closed)
            assert await address_balance(chain.rpc, host.address) - before == expected
            with host_ledger(host_dir) as ledger:
                report = ledger.earnings()
                record = ledger.channel(str(channel))
            assert report["settled"] == expected and report["pending"] == 0
            assert record is not None and record.state == "closed"
