"""kill -9 of the payer during a fetch, 5 times: after each restart it resynchronises
(CHANNEL_STATE) and, at the end, payer and host record the same channel total."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import trio

from node.ledger import LEDGER_FILE, Ledger
from protocol.payments import chunk_price
from tests.helpers.chain import REPO_ROOT, open_mu_chain
from tests.helpers.exchange import payer_lines, seed_chunks
from tests.helpers.node import open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per chunk
CHUNKS = 60
KILLS = 5


@pytest.mark.slow
async def test_payer_killed_during_fetch_both_sides_agree(tmp_path: Path) -> None:
    rng = random.Random(11)
    host_dir, payer_dir = tmp_path / "host", tmp_path / "payer"
    payer_dir.mkdir()
    addresses = seed_chunks(host_dir, CHUNKS, CHUNK)
    listing = tmp_path / "addresses.txt"
    listing.write_text("\n".join(a.hex() for a in addresses))
    price = chunk_price(CHUNK, PRICE)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, ["--price-get", str(PRICE), "--free-allowance", "0"]) as host:
            received = 0
            kills = 0
            channel = ""
            while True:
                argv = [sys.executable, "-m", "tests.helpers.payer_child", str(payer_dir), chain.url,
                        str(chain.cookie_path), host.node_id.hex(), str(host.port), str(listing), str(received)]
                process = await trio.lowlevel.open_process(argv, cwd=str(REPO_ROOT), stdout=-1)
                assert process.stdout is not None
                # Kill after a random number of chunks of this run (if kills are left).
                kill_after = rng.randint(1, 12) if kills < KILLS else None
                got_this_run = 0
                with trio.fail_after(120):
                    async for words in payer_lines(process):
                        if words[0] == "channel":
                            channel = words[1]
                        elif words[0] == "got":
                            received = int(words[1]) + 1
                            got_this_run += 1
                            if kill_after is not None and got_this_run == kill_after:
                                process.kill()  # mid-way into the next chunk's payment
                await process.wait()
                if process.returncode == 0:
                    break
                kills += 1
                assert kills <= KILLS, f"payer failed on its own (exit {process.returncode})"
            assert received == CHUNKS and kills == KILLS
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        host_total = ledger.channel(channel).total  # type: ignore[union-attr]
    with Ledger.open(payer_dir / LEDGER_FILE) as ledger:
        payer_total = ledger.channel(channel).total  # type: ignore[union-attr]
    assert host_total == payer_total
    # A payment whose chunk never arrived is honoured by redelivery or re-sent
    # at the same total: never paid twice.
    assert host_total == CHUNKS * price
