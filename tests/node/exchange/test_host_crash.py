"""Must hold: kill -9 of the host at random moments of a 200-chunk fetch, 20 times.

After every restart the payer resynchronises (CHANNEL_STATE) and goes on.
At the end: the host's ledger recorded a payment (or free-allowance use)
for every chunk the payer received, its channel total equals what it
recorded, and at no point had the payer signed more than one chunk's price
beyond what it had received.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import trio

from node.ledger import LEDGER_FILE, Ledger
from node.transport import SessionBroken, SessionClosed, TransportError
from protocol.payments import chunk_price
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import open_fetcher, seed_chunks
from tests.helpers.node import open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per chunk
ALLOWANCE = 300
CHUNKS = 200
KILLS = 20
# The kill lands somewhere in a chunk's round trip: before, during or after
# the host's durable record, or after it answered.
KILL_WINDOW_SECONDS = 0.015


@pytest.mark.slow
async def test_host_killed_20_times_during_a_200_chunk_fetch(tmp_path: Path) -> None:
    rng = random.Random(7)
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, CHUNKS, CHUNK)
    price = chunk_price(CHUNK, PRICE)
    kill_at = set(rng.sample(range(CHUNKS), KILLS))
    received: dict[bytes, bytes] = {}
    async with open_mu_chain(tmp_path / "chain") as chain:
        args = ["--price-get", str(PRICE), "--free-allowance", str(ALLOWANCE)]
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            channel = await fetcher.open_channel(link, capacity=100_000)

            def check_exposure() -> None:
                # What the payer signed, minus the value it got beyond the allowance.
                assert link.channel is not None
                value = len(received) * price
                assert link.channel.total - max(0, value - ALLOWANCE) <= price

            async def get(address: bytes) -> None:
                with trio.fail_after(30):
                    data = await fetcher.payer.get(link, address, expected_size=CHUNK)
                assert hashlib.sha256(data).digest() == address
                received[address] = data

            async def killer() -> None:
                await trio.sleep(rng.uniform(0, KILL_WINDOW_SECONDS))  # picks the crash moment, not a sync
                await host.kill()

            index = 0
            kills = interrupted = 0
            outcomes = {"recorded, not delivered": 0, "signed, not recorded": 0, "before payment": 0}
            while index < CHUNKS:
                address = addresses[index]
                if index in kill_at:
                    kill_at.discard(index)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(killer)
                        try:
                            await get(address)
                        except (SessionBroken, SessionClosed, TransportError):
                            interrupted += 1
                    kills += 1
                    check_exposure()
                    await host.restart()
                    link = await fetcher.link(host)  # CHANNEL_STATE: adopt the host's record
                    check_exposure()
                    if address not in received:
                        if link.machine.account.is_redelivery(address, "get"):
                            outcomes["recorded, not delivered"] += 1
                        elif link.channel is not None and link.channel.total > link.machine.acknowledged:
                            outcomes["signed, not recorded"] += 1
                        else:
                            outcomes["before payment"] += 1
                    if address in received:
                        index += 1
                    continue
                await get(address)
                check_exposure()
                index += 1
            assert kills == KILLS and host.starts == KILLS + 1
            print(f"{interrupted} of {KILLS} kills interrupted a request in flight: {outcomes}")
            assert interrupted > 0  # the crashes did land inside requests
            assert len(received) == CHUNKS
            payer_total = link.channel.total  # type: ignore[union-attr]
            await host.stop()
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        record = ledger.channel(str(channel))
        payments = ledger.payments()
        account = ledger.account(fetcher.transport.identity.node_id.hex(), "in")
    assert record is not None
    recorded_chunks = {p.chunk for p in payments}
    assert {a.hex() for a in received} <= recorded_chunks  # recorded before served, across every crash
    assert record.total == sum(p.amount for p in payments if p.channel_id == str(channel))
    assert account.consumed - account.paid <= ALLOWANCE
    assert record.total == payer_total == CHUNKS * price - ALLOWANCE
