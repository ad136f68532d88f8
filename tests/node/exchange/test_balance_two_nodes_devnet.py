"""Must hold (issue 21, first line): two real `mu node --offer` processes storing for each other over a devnet.

A real `mu chain` (mining on its own, so a channel funding confirms) and
two real nodes that offer storage, B joined to A's DHT: a network of two,
so with one replica every chunk one node adds lands on the other.  Each
adds a file through its node's control API, as `mu add` does.

- The same size both ways: both ledgers hold equal service given and
  taken, a net of 0, and no channel and no payment on either side.
- Then B adds a file and A one three times its size: A owes the imbalance,
  opens a channel when a payment falls due (PaidPeers, before the request
  that would be served twice otherwise), pays exactly what it owes, to the
  sat, leaving less than the payment threshold, and `mu channels close` on
  B puts exactly the sum paid on chain (py-bitcoinkernel checks every
  transaction of the devnet).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest
import trio

from node.api.client import ControlClient
from node.bitcoin.wallet import Wallet
from node.ledger import LEDGER_FILE, Ledger
from node.store import INDEX_FILE, STORE_DIR
from protocol.payments import Direction, Kind, chunk_price
from protocol.payments.balance import BalanceTerms, PeerBalance
from tests.helpers.chain import REPO_ROOT, MuChain, open_mu_chain
from tests.helpers.exchange import address_balance, wait_for
from tests.helpers.node import MuNode, open_mu_node

CHUNK = 64 * 1024
PRICE_PUT = 20_000  # sats per MiB: 1,250 per 64 KiB chunk, within the in-flight limit; thresholds cross in a few
THRESHOLD = BalanceTerms().payment_threshold
NODE_ARGS = ["--offer", "1GB", "--price-put", str(PRICE_PUT), "--max-price-put", str(PRICE_PUT),
             "--settle-poll", "0.2"]


async def add(node: MuNode, path: Path, size: int) -> None:
    """Add ``size`` random bytes through ``node`` with one replica: all of it lands on the other node."""
    path.write_bytes(os.urandom(size))
    added = await ControlClient.from_data_dir(node.data_dir).run_stream(
        "add", {"path": str(path), "replicas": 1, "chunk_size": CHUNK}, lambda event: None)
    assert added["under_replicated"] == 0


def view(node: MuNode, peer: MuNode) -> PeerBalance:
    with Ledger.open(node.data_dir / LEDGER_FILE) as ledger:
        return ledger.balance(peer.node_id.hex())


async def settled(a: MuNode, b: MuNode) -> tuple[PeerBalance, PeerBalance]:
    """Both views once they agree: all service and payments sent are recorded on both sides
    (acknowledgements themselves may reach the disk lazily, specs/payments.md §Service balance "State")."""
    def done() -> tuple[PeerBalance, PeerBalance] | None:
        va, vb = view(a, b), view(b, a)
        agree = (va.given, va.paid_out) == (vb.taken, vb.paid_in) and (vb.given, vb.paid_out) == (va.taken, va.paid_in)
        return (va, vb) if agree else None

    views: tuple[PeerBalance, PeerBalance] = await wait_for(done, deadline=60)
    return views


def service_held(node: MuNode) -> int:
    """The PUT price of every chunk in ``node``'s store: its own files' and those it stores for the other."""
    with sqlite3.connect(f"file:{node.data_dir / STORE_DIR / INDEX_FILE}?mode=ro", uri=True) as index:
        return sum(chunk_price(size, PRICE_PUT) for (size,) in index.execute("SELECT size FROM chunks"))


def payments(node: MuNode) -> list[tuple[str, str, int]]:
    with Ledger.open(node.data_dir / LEDGER_FILE) as ledger:
        return [(p.direction, p.kind, p.amount) for p in ledger.payments()]


async def fund(chain: MuChain, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    await (await Wallet.open(data_dir, chain.rpc)).faucet(1)


@pytest.mark.slow
async def test_two_nodes_storing_for_each_other_pay_only_the_imbalance(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain", mine=True) as chain:
        await fund(chain, tmp_path / "a")
        async with open_mu_node(tmp_path / "a", chain, NODE_ARGS) as a:
            bootstrap = ["--bootstrap", f"127.0.0.1:{a.extra['dht_port']}"]
            async with open_mu_node(tmp_path / "b", chain, [*NODE_ARGS, *bootstrap]) as b:
                with trio.fail_after(300):
                    # The same amount of storage both ways: below the threshold at every step, and net 0.
                    await add(a, tmp_path / "a1.bin", 4 * CHUNK)
                    await add(b, tmp_path / "b1.bin", 4 * CHUNK)
                    va, vb = await settled(a, b)
                    assert va.given == va.taken == vb.given == vb.taken > 0 and va.net == vb.net == 0
                    assert payments(a) == payments(b) == []
                    for node in (a, b):
                        with Ledger.open(node.data_dir / LEDGER_FILE) as ledger:
                            assert ledger.channels() == []

                    # B stores some on A, then A three times as much on B: A owes B the imbalance.
                    await add(b, tmp_path / "b2.bin", 6 * CHUNK)
                    await add(a, tmp_path / "a2.bin", 18 * CHUNK)
                    va, vb = await settled(a, b)
                    # Each chunk was served and counted once (none twice for want of a channel).
                    assert service_held(a) == service_held(b) == va.given + va.taken
                    imbalance = va.taken - va.given
                    assert imbalance >= 12 * chunk_price(CHUNK, PRICE_PUT)
                    paid = va.paid_out
                    assert paid == imbalance + va.net > 0 and 0 <= -va.net < THRESHOLD  # exactly what it owed
                    assert vb.paid_in == paid and vb.net == -va.net and va.paid_in == vb.paid_out == 0
                    spent, earned = payments(a), payments(b)
                    assert {k for _, k, _ in spent} == {k for _, k, _ in earned} == {Kind.SETTLE}
                    assert sum(n for d, _, n in spent if d == Direction.OUT) == paid
                    assert sum(n for d, _, n in earned if d == Direction.IN) == paid
                    with Ledger.open(b.data_dir / LEDGER_FILE) as ledger:
                        [channel] = ledger.channels()
                        assert channel.total == paid

                    before = await address_balance(chain.rpc, b.address)
                    result = await trio.run_process(
                        [sys.executable, "-m", "node", "--data-dir", str(b.data_dir), "channels", "close",
                         channel.channel_id], cwd=str(REPO_ROOT), capture_stdout=True)
                    assert b"marked closing" in result.stdout

                    def confirmed() -> bool:
                        with Ledger.open(b.data_dir / LEDGER_FILE) as ledger:
                            return any(s.state == "confirmed" for s in ledger.settlements(channel.channel_id))

                    await wait_for(confirmed, deadline=120)
                    assert await address_balance(chain.rpc, b.address) - before == paid  # exactly, to the sat
