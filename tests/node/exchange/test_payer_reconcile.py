"""The payer's start-up reconcile (specs/payments.md §After a crash), with the crash's result made on purpose.

A kill -9 between a payment leaving and the payer's record of it committing
leaves the payer's ledger as it was before that payment while the host has
recorded it.  Killing at random and hoping to land in that window proved
unreliable (on a quiet machine 6 kills in 6 missed it), so the test builds the
state exactly: it copies the payer's ledger after a first run, lets a second
run pay for more chunks, and puts the copy back.  The payer's ledger is then
short of the host's by the second run's payments, with every signature in it
its own; a restart that asks the host for nothing must close the gap to the sat.
"""

from __future__ import annotations

import sqlite3
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
from tests.helpers.chain import REPO_ROOT, MuChain, open_mu_chain
from tests.helpers.exchange import payer_lines, seed_chunks
from tests.helpers.node import MuNode, open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # sats per MiB: 64 sats per chunk
PER_CHUNK = PRICE * CHUNK // (1 << 20)
FIRST = 6  # chunks paid before the ledger copy
LOST = 5  # chunks paid after it: the payments the "crash" loses from the payer's ledger


def books(host_dir: Path, payer_dir: Path) -> tuple[int, int]:
    """(what the payer's ledger says it spent, what the host's says it earned)."""
    with Ledger.open(payer_dir / LEDGER_FILE) as payer, Ledger.open(host_dir / LEDGER_FILE) as host:
        return int(payer.earnings()["spent"]), int(host.earnings()["earned"])


def copy_database(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy, whatever the journal mode."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


async def pay_for(payer_dir: Path, chain: MuChain, host: MuNode, addresses: list[bytes], start: int) -> None:
    """Run the payer process over ``addresses[start:]`` to its end; each chunk is paid for."""
    listing = payer_dir.parent / f"addresses-{len(addresses)}.txt"
    listing.write_text("\n".join(a.hex() for a in addresses))
    argv = [sys.executable, "-m", "tests.helpers.payer_child", str(payer_dir), chain.url, str(chain.cookie_path),
            host.node_id.hex(), str(host.port), str(listing), str(start)]
    process = await trio.lowlevel.open_process(argv, cwd=str(REPO_ROOT), stdout=-1)
    got = 0
    with trio.fail_after(120):
        async for words in payer_lines(process):
            got += words[0] == "got"
        assert await process.wait() == 0
    assert got == len(addresses) - start


async def restart_and_reconcile(payer_dir: Path, chain: MuChain, host: MuNode) -> None:
    """What a restarted node does before any request: reconcile every open payer channel."""
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


@pytest.mark.slow
async def test_a_restarted_payer_records_the_payments_its_ledger_lost(tmp_path: Path) -> None:
    host_dir, payer_dir = tmp_path / "host", tmp_path / "payer"
    payer_dir.mkdir()
    addresses = seed_chunks(host_dir, FIRST + LOST, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, ["--price-get", str(PRICE), "--free-allowance", "0"]) as host:
            await pay_for(payer_dir, chain, host, addresses[:FIRST], 0)
            assert books(host_dir, payer_dir) == (FIRST * PER_CHUNK, FIRST * PER_CHUNK)
            copy_database(payer_dir / LEDGER_FILE, tmp_path / "before.sqlite")
            await pay_for(payer_dir, chain, host, addresses, FIRST)
            earned = (FIRST + LOST) * PER_CHUNK
            assert books(host_dir, payer_dir) == (earned, earned)

            # The crash's result: the host recorded LOST payments the payer's ledger never held.
            copy_database(tmp_path / "before.sqlite", payer_dir / LEDGER_FILE)
            assert books(host_dir, payer_dir) == (FIRST * PER_CHUNK, earned)

            await restart_and_reconcile(payer_dir, chain, host)
    assert books(host_dir, payer_dir) == (earned, earned)
    with sqlite3.connect(payer_dir / LEDGER_FILE) as conn:
        catch_up = conn.execute("SELECT amount, total FROM payments WHERE direction = 'out' ORDER BY id DESC LIMIT 1").fetchone()
        payer_sig, = conn.execute("SELECT payer_sig FROM channels WHERE role = 'payer'").fetchone()
    assert catch_up == (LOST * PER_CHUNK, earned), "one catch-up row carries exactly the lost payments"
    assert payer_sig is not None, "the payer keeps its own signature of the adopted total"


@pytest.mark.slow
async def test_a_reconnected_payer_takes_back_the_payments_the_host_never_recorded(tmp_path: Path) -> None:
    # The other side of a crash: the host was killed before its records of LOST payments committed (its
    # ledger is put back to the copy), while the payer's session died with it and its records stand. The
    # payer's next session's CHANNEL_STATE says what the host recorded; the payer takes back the rest
    # (specs/payments.md §After a crash), and paying for those chunks again charges each once.
    host_dir, payer_dir = tmp_path / "host", tmp_path / "payer"
    payer_dir.mkdir()
    addresses = seed_chunks(host_dir, FIRST + LOST, CHUNK)
    first, both = FIRST * PER_CHUNK, (FIRST + LOST) * PER_CHUNK
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, ["--price-get", str(PRICE), "--free-allowance", "0"]) as host:
            await pay_for(payer_dir, chain, host, addresses[:FIRST], 0)
            copy_database(host_dir / LEDGER_FILE, tmp_path / "host-before.sqlite")
            await pay_for(payer_dir, chain, host, addresses, FIRST)
            assert books(host_dir, payer_dir) == (both, both)
        copy_database(tmp_path / "host-before.sqlite", host_dir / LEDGER_FILE)
        assert books(host_dir, payer_dir) == (both, first)
        async with open_mu_node(host_dir, chain, ["--price-get", str(PRICE), "--free-allowance", "0"]) as host:
            await restart_and_reconcile(payer_dir, chain, host)
            assert books(host_dir, payer_dir) == (first, first)
            await pay_for(payer_dir, chain, host, addresses, FIRST)
    assert books(host_dir, payer_dir) == (both, both)
    with sqlite3.connect(payer_dir / LEDGER_FILE) as conn:
        totals = [t for t, in conn.execute("SELECT total FROM payments WHERE direction = 'out' ORDER BY id")]
    assert totals == [PER_CHUNK * i for i in range(1, FIRST + LOST + 1)], "each chunk paid once, totals in order"
