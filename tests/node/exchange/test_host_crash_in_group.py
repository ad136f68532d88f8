"""Must hold: kill -9 of the host inside a group of its records (specs/payments.md §Ledger, "Grouped host commits").

A payer keeps a deep window of paid requests in flight (16); the host
decides each request on the state the one before it left and writes the
records of every request decided meanwhile in one transaction, answering
each only once its group has committed.  The host is killed many times, at
random points of the stream (a random number of answers into a round, then
a random fraction of a chunk's round trip), so that most kills land with a
group decided and not yet on disk.  After every restart the payer
resynchronises (CHANNEL_STATE) and goes on.

At the end: every chunk the payer received is recorded by the host (never
served before its record), the host's channel total equals its payment rows
and the payer's total (paid == earned to the sat), the host never served
past the free allowance unpaid, the payer never had more than one chunk's
price paid for and not received, and the host's rows show groups of more
than one record.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

import pytest
import trio

from node.exchange import HostLink
from node.ledger import LEDGER_FILE, Ledger
from protocol.payments import MAX_PAID_WINDOW, Direction, chunk_price, paid_window
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import Fetcher, fetch_through_a_host_kill, open_fetcher, seed_chunks
from tests.helpers.node import open_mu_node

CHUNK = 64 * 1024
PRICE = 1_024  # sats per MiB: 64 sats per chunk
CHUNK_PRICE = chunk_price(CHUNK, PRICE)
ALLOWANCE = (MAX_PAID_WINDOW - 1) * CHUNK_PRICE + 10  # room for the deepest window
WINDOW = paid_window(CHUNK_PRICE, ALLOWANCE)
WORKERS = WINDOW + 8  # callers, more than the window
CHUNKS = 400
KILLS = 12
# A round's crash comes after 1 to KILL_AFTER_MOST more answers, then up to
# KILL_DELAY_MOST seconds later (it picks the moment, it synchronises nothing).
KILL_AFTER_MOST = 2 * WINDOW
KILL_DELAY_MOST = 0.004


class Stream:
    """What the payer received, checking the exposure bound at every answer."""

    def __init__(self) -> None:
        self.received: dict[bytes, bytes] = {}
        self.value = 0  # prices of the chunks whose answers are in
        self.changed = trio.Event()

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def check(self, link: HostLink) -> None:
        assert link.channel is not None
        assert link.channel.total - self.value <= CHUNK_PRICE  # paid for, not received: one chunk at most

    async def fetch(self, fetcher: Fetcher, link: HostLink, addresses: list[bytes]) -> None:
        """WORKERS concurrent callers take ``addresses`` in order."""
        queue = iter(addresses)

        async def worker() -> None:
            for address in queue:
                data = await fetcher.payer.get(link, address, expected_size=CHUNK)
                assert hashlib.sha256(data).digest() == address
                self.check(link)
                if address not in self.received:
                    self.value += CHUNK_PRICE
                self.received[address] = data
                self._changed()

        try:
            async with trio.open_nursery() as nursery:
                for _ in range(WORKERS):
                    nursery.start_soon(worker)
        finally:
            self._changed()


@pytest.mark.slow
async def test_host_killed_inside_groups_of_records_loses_nothing(tmp_path: Path) -> None:
    assert WINDOW == MAX_PAID_WINDOW
    rng = random.Random(22)
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, CHUNKS, CHUNK)
    stream = Stream()
    args = ["--price-get", str(PRICE), "--free-allowance", str(ALLOWANCE)]
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            channel = str(await fetcher.open_channel(link, capacity=100_000))
            kills = interrupted = 0
            while len(stream.received) < CHUNKS:
                remaining = [a for a in addresses if a not in stream.received]
                killed, broke = await fetch_through_a_host_kill(
                    stream, fetcher, link, remaining, host, rng=rng if kills < KILLS else None,
                    after_most=KILL_AFTER_MOST, delay_most=KILL_DELAY_MOST)
                interrupted += broke
                if killed:
                    kills += 1
                    await host.restart()
                    link = await fetcher.link(host)  # CHANNEL_STATE: the host's total and recent charges
                    stream.check(link)
            assert kills == KILLS and host.starts == KILLS + 1
            assert interrupted > KILLS // 2  # most crashes landed inside a stream of requests in flight
            payer_total = link.channel.total  # type: ignore[union-attr]
            payer_spent = sum(p.amount for p in fetcher.ledger.payments() if p.channel_id == channel)
            await host.stop()
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        record = ledger.channel(channel)
        payments = ledger.payments()
        account = ledger.account(fetcher.transport.identity.node_id.hex(), Direction.IN)
    assert record is not None
    assert {a.hex() for a in stream.received} <= {p.chunk for p in payments}  # recorded before served
    earned = sum(p.amount for p in payments if p.channel_id == channel)
    assert record.total == earned == payer_total == payer_spent  # paid == earned, to the sat
    assert account.consumed - account.paid <= ALLOWANCE  # never served past the allowance unpaid
    # Every chunk recorded and not delivered before a crash was redelivered free: nothing paid twice.
    assert payer_total == CHUNKS * CHUNK_PRICE - ALLOWANCE
    # The rows of one group share their time: groups of several records did form.
    sizes = Counter(p.at for p in payments)
    assert max(sizes.values()) > 1 and len(sizes) < len(payments)
