"""What a settlement pass looks at (specs/payments.md §Settlement, "What a pass looks at"):
with nothing changed, one ``getblockcount`` and no table read; a channel is looked at again
when the tip moves, when its state changes (here from another connection, as ``mu channels
close`` does), and the pass after a look that wrote to the ledger."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from node.exchange import ChainView
from node.exchange.settlement import SettlementConfig, SettlementWatcher
from node.ledger import LEDGER_FILE, ChannelRecord, Ledger
from protocol.payments import ChannelStatus, Role
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import open_fetcher, seed_chunks
from tests.helpers.node import open_mu_node


class CountingRPC:
    """The fetcher's RPC client, counting calls by method."""

    def __init__(self, rpc: Any) -> None:
        self.rpc = rpc
        self.calls: Counter[str] = Counter()

    async def call(self, method: str, *params: Any) -> Any:
        self.calls[method] += 1
        return await self.rpc.call(method, *params)

    def take(self) -> dict[str, int]:
        calls, self.calls = dict(self.calls), Counter()
        return calls


async def test_a_pass_looks_only_at_what_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_dir = tmp_path / "host"
    seed_chunks(host_dir, 1, 1024)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, ["--expiry-window", "10"]) as host, \
                open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            channels = [str(await fetcher.open_channel(link, capacity=25_000, expiry_blocks=40)) for _ in range(3)]
            rpc = CountingRPC(fetcher.rpc)
            watcher = SettlementWatcher(ledger=fetcher.ledger, chain=ChainView(rpc), book=None,
                                        payer_key=fetcher.payer.key, refund_script=fetcher.wallet.script_pubkey(),
                                        config=SettlementConfig())
            reads: list[int] = []
            read_channels = fetcher.ledger.channels

            def counted_channels(**filters: Any) -> list[ChannelRecord]:
                reads.append(1)
                return read_channels(**filters)

            monkeypatch.setattr(fetcher.ledger, "channels", counted_channels)

            # The first pass looks at every open channel: each funding is unspent.
            await watcher.run_once()
            assert rpc.take() == {"getblockcount": 1, "gettxout": 3}
            assert len(reads) == 1

            # Nothing changed: the tip only, no table read.
            await watcher.run_once()
            await watcher.run_once()
            assert rpc.take() == {"getblockcount": 2}
            assert len(reads) == 1

            # Another connection marks one closing (as ``mu channels close`` or a
            # payer's §Channel recovery does): the channels are read again and
            # that one alone is looked at.
            with Ledger.open(tmp_path / "payer" / LEDGER_FILE) as other:
                other.set_channel_state(channels[1], ChannelStatus.CLOSING)
            await watcher.run_once()
            assert rpc.take() == {"getblockcount": 1, "gettxout": 1}
            assert len(reads) == 2
            await watcher.run_once()
            assert rpc.take() == {"getblockcount": 1}

            # A block: every channel is looked at again.
            await fetcher.mine(1)
            await watcher.run_once()
            assert rpc.take() == {"getblockcount": 1, "gettxout": 3}
            assert len(reads) == 2

            # Their expiry reached, the watcher refunds them; the pass after
            # that write looks at the refund again (and finds it in the mempool)
            # without waiting for a block.
            tip = int(await fetcher.rpc.call("getblockcount"))
            expiry = max(record.expiry for record in fetcher.ledger.channels())
            await fetcher.mine(expiry - tip)
            await watcher.run_once()
            refunds = rpc.take()
            assert refunds["sendrawtransaction"] == 3
            await watcher.run_once()
            assert rpc.take() == {"getblockcount": 1, "getrawtransaction": 3}
            await watcher.run_once()
            assert rpc.take() == {"getblockcount": 1}
            await fetcher.mine(1)
            await watcher.run_once()
            states = {record.channel_id: record.state for record in fetcher.ledger.channels()}
            assert set(states.values()) == {ChannelStatus.REFUNDED}


def test_the_ledger_version_changes_on_any_commit(tmp_path: Path) -> None:
    """The watcher's "has the ledger changed" (specs/payments.md §Settlement): a commit of its own
    connections or of another's (another process: ``mu channels close``) changes it; reads do not."""
    path = tmp_path / LEDGER_FILE
    with Ledger.open(path) as ledger, Ledger.open(path) as other:
        record = ChannelRecord(channel_id="ab" * 32, role=Role.PAYEE, peer="00" * 20, state=ChannelStatus.OPEN,
                               capacity=25_000, total=0, payer_sig=None, funding_txid="cd" * 32, funding_vout=0,
                               expiry=500, params=b"", opened_at=0.0, updated_at=0.0)
        first = ledger.version()
        assert ledger.channels() == [] and ledger.version() == first
        ledger.add_channel(record)
        second = ledger.version()
        assert second != first
        assert ledger.channels() == [record] and ledger.version() == second
        other.set_channel_state(record.channel_id, ChannelStatus.CLOSING, now=1.0)
        assert ledger.version() != second
