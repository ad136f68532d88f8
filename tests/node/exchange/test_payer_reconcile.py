"""kill -9 of the payer with a paid window in flight, then a restart that asks the host for nothing:
the start-up reconciliation (specs/payments.md §After a crash) alone makes the ledgers agree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from node.bitcoin.rpc import RPCClient
from node.bitcoin.wallet import Wallet
from node.exchange import Payer
from node.exchange.paying import PaidPeers
from node.ledger import LEDGER_FILE, Ledger
from node.runtime.config import load_identity
from node.runtime.daemon import PAYER_KEY_INDEX, PAYMENT_KEY_INDEX
from node.store import STORE_DIR, ChunkStore
from node.transport import ChunkServer, Session, open_transport
from tests.helpers.chain import REPO_ROOT, open_mu_chain
from tests.helpers.exchange import payer_lines, seed_chunks
from tests.helpers.node import open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per chunk
CHUNKS = 400
WORKERS = 8  # requests in flight at once (the paid window)
KILL_AFTER = 20  # chunks received before the kill
TRIES = 6  # kills until one lands between a payment leaving and its record committing


def books(host_dir: Path, payer_dir: Path) -> tuple[int, int]:
    """(what the payer's ledger says it spent, what the host's says it earned)."""
    with Ledger.open(payer_dir / LEDGER_FILE) as payer, Ledger.open(host_dir / LEDGER_FILE) as host:
        return int(payer.earnings()["spent"]), int(host.earnings()["earned"])


@pytest.mark.slow
async def test_payer_restart_reconciles_without_a_request(tmp_path: Path) -> None:
    host_dir, payer_dir = tmp_path / "host", tmp_path / "payer"
    payer_dir.mkdir()
    addresses = seed_chunks(host_dir, CHUNKS, CHUNK)
    listing = tmp_path / "addresses.txt"
    listing.write_text("\n".join(a.hex() for a in addresses))
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, ["--price-get", str(PRICE), "--free-allowance", "0"]) as host:
            for _ in range(TRIES):
                argv = [sys.executable, "-m", "tests.helpers.payer_child", str(payer_dir), chain.url,
                        str(chain.cookie_path), host.node_id.hex(), str(host.port), str(listing), "0", str(WORKERS)]
                process = await trio.lowlevel.open_process(argv, cwd=str(REPO_ROOT), stdout=-1)
                got = 0
                with trio.fail_after(120):
                    async for words in payer_lines(process):
                        got += words[0] == "got"
                        if got == KILL_AFTER:
                            process.kill()  # the window's other requests are in flight
                    await process.wait()
                spent, earned = books(host_dir, payer_dir)
                if spent != earned:
                    break
            assert spent < earned, f"no kill of {TRIES} left the payer's ledger short ({spent} == {earned})"

            # The restart: the node's start-up reconciliation, and no request.
            identity = load_identity(payer_dir)
            with Ledger.open(payer_dir / LEDGER_FILE) as ledger, ChunkStore(payer_dir / STORE_DIR) as store:
                async with RPCClient(chain.url, cookie_path=chain.cookie_path) as rpc:
                    wallet = await Wallet.open(payer_dir, rpc)
                    payer = Payer(ledger=ledger, key=wallet.keys[PAYER_KEY_INDEX], max_price_per_mib_get=10_000,
                                  max_price_per_mib_put=10_000)
                    async with open_transport(identity, ChunkServer(store),
                                              payment_key=wallet.keys[PAYMENT_KEY_INDEX].public_key.data) as transport:
                        async def dial(node_id: bytes) -> Session | None:
                            return await transport.connect(node_id, "127.0.0.1", host.port)

                        with trio.fail_after(60):
                            await PaidPeers(payer, wallet, rpc).reconcile(dial)
    assert books(host_dir, payer_dir) == (earned, earned)
