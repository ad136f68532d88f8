"""The paid window (specs/payments.md §Paid window) against a real ``mu node`` host.

More callers than the window fetch concurrently through one ``Payer``:
the payer keeps exactly ``paid_window`` paid requests in flight, never
more; at every answer what it has signed minus the value it has received
is within one chunk's price; the host never serves past its allowance;
and a kill -9 of the host with a full window in flight costs the payer
nothing (the host redelivers every chunk it recorded and did not send).
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from node.runtime.config import load_identity
from node.exchange import HostLink
from node.exchange.paying import Tally
from node.ledger import LEDGER_FILE, Ledger, PaymentEntry
from node.transport import RequestError
from protocol.payments import Direction, Kind, PaymentErrorCode, RemotePaymentError, chunk_price, paid_window
from protocol.payments.messages import Payment
from protocol.payments.payer import Request
from protocol.wire import ErrorCode
from tests.helpers.chain import REPO_ROOT, open_mu_chain
from tests.helpers.exchange import Fetcher, fetch_through_a_host_kill, open_fetcher, payer_lines, seed_chunks
from tests.helpers.node import open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # sats per MiB: 64 sats per chunk
CHUNK_PRICE = chunk_price(CHUNK, PRICE)
ALLOWANCE = 2 * CHUNK_PRICE + 10  # room for a window of 3
WINDOW = paid_window(CHUNK_PRICE, ALLOWANCE)
WORKERS = 6  # callers, more than the window
HOST_ARGS = ["--price-get", str(PRICE), "--free-allowance", str(ALLOWANCE)]


class Watch:
    """Counts what the payer received and checks the exposure bound at every answer."""

    def __init__(self, size: int = CHUNK) -> None:
        self.size = size
        self.received: dict[bytes, bytes] = {}
        self.value = 0  # prices of the chunks whose answers are in
        self.most_in_flight = 0
        self.changed = trio.Event()  # set (and replaced) when a chunk is received or a fetch ends

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def watch(self, link: HostLink) -> HostLink:
        """Count each chunk of ``link``'s session as received the moment its answer is in.

        The signed total only grows and the value received only changes at
        an answer, so the worst of each span between two answers is the
        signed total at the second one against the value before it.
        """
        session = link.session
        get_chunk = session.get_chunk

        async def counted(address: bytes, payment: object = None, **kwargs: object) -> bytes:
            data = await get_chunk(address, payment, **kwargs)  # type: ignore[arg-type]
            self.check(link)
            self.value += CHUNK_PRICE
            return data

        session.get_chunk = counted  # type: ignore[method-assign]
        return link

    def check(self, link: HostLink) -> None:
        assert link.channel is not None
        assert link.channel.total - self.value <= CHUNK_PRICE

    def instrument(self, fetcher: Fetcher) -> None:
        """Record the payer's requests in flight each time one is signed."""
        prepare: Callable[..., object] = fetcher.payer.window._prepare

        def counted(link: HostLink, request: Request, tally: object) -> object:
            assert link.machine.inflight < WINDOW, "a request signed with the window full"
            prepared = prepare(link, request, tally)
            self.most_in_flight = max(self.most_in_flight, link.machine.inflight)
            return prepared

        fetcher.payer.window._prepare = counted  # type: ignore[method-assign, assignment]

    async def fetch(self, fetcher: Fetcher, link: HostLink, addresses: list[bytes]) -> None:
        """Fetch ``addresses`` with WORKERS concurrent callers taking them in order."""
        async def one(address: bytes) -> bytes:
            self.received[address] = data = await fetcher.payer.get(link, address, expected_size=self.size)
            self._changed()
            return data

        try:
            await by_workers(addresses, one)
        finally:
            self._changed()


async def by_workers(addresses: list[bytes], fetch: Callable[[bytes], Awaitable[bytes | None]]) -> set[bytes]:
    """WORKERS concurrent callers take ``addresses`` in order through ``fetch`` (None: nothing came);
    returns the addresses received, each checked against its bytes."""
    queue = iter(addresses)
    received: set[bytes] = set()

    async def worker() -> None:
        for address in queue:
            data = await fetch(address)
            if data is not None:
                assert hashlib.sha256(data).digest() == address
                received.add(address)

    async with trio.open_nursery() as nursery:
        for _ in range(WORKERS):
            nursery.start_soon(worker)
    return received


def host_books(host_dir: Path, channel: str, payer_id: str) -> tuple[int, set[str], int, int, int]:
    """The host ledger's channel total, charged chunks, payment sum, consumed and paid."""
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        record = ledger.channel(channel)
        payments = ledger.payments()
        account = ledger.account(payer_id, "in")
    assert record is not None
    paid = sum(p.amount for p in payments if p.channel_id == channel)
    return record.total, {p.chunk for p in payments}, paid, account.consumed, account.paid


async def test_window_is_full_and_bounded_and_ledgers_agree(tmp_path: Path) -> None:
    assert WINDOW == 3
    count = 40
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, count, CHUNK)
    watch = Watch()
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            watch.instrument(fetcher)
            link = watch.watch(await fetcher.link(host))
            channel = str(await fetcher.open_channel(link, capacity=100_000))
            await watch.fetch(fetcher, link, addresses)
            assert len(watch.received) == count
            assert watch.most_in_flight == WINDOW  # pipelined, up to the window and no further
            assert link.channel is not None and link.machine.inflight == 0
            payer_total = link.channel.total
            payer_rows = fetcher.ledger.payments(channel_id=channel)
            await host.stop()
    expected = count * CHUNK_PRICE - ALLOWANCE
    assert payer_total == expected
    assert sum(p.amount for p in payer_rows) == expected  # our records, written in batches, add up
    assert [p.total for p in payer_rows] == sorted({p.total for p in payer_rows})  # in signing order
    total, charged, paid, consumed, account_paid = host_books(host_dir, channel, fetcher.transport.identity.node_id.hex())
    assert total == paid == expected
    assert {a.hex() for a in addresses} <= charged
    assert consumed - account_paid <= ALLOWANCE  # never served past the allowance


async def test_a_late_payment_on_a_covered_request_is_ignored_not_refused(tmp_path: Path) -> None:
    """Two paid GETs whose payments reach the host in the opposite order: both are served,
    and a stale payment on a request that is not covered is still refused."""
    host_dir = tmp_path / "host"
    chunks = seed_chunks(host_dir, 6, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            await fetcher.open_channel(link, capacity=100_000)
            for address in chunks[:3]:  # past the allowance: each next GET owes one price
                await fetcher.payer.get(link, address, expected_size=CHUNK)
            assert link.channel is not None and link.channel_id is not None
            accepted = link.channel.total
            assert accepted == 3 * CHUNK_PRICE - ALLOWANCE
            lower = link.channel.sign(accepted + CHUNK_PRICE)
            higher = link.channel.sign(accepted + 2 * CHUNK_PRICE)

            def wire(payment: object) -> dict[str, object]:
                return Payment(channel=link.channel_id, total=payment.total, sig=payment.signature).to_wire()  # type: ignore[arg-type, attr-defined]

            # The higher total arrives first and pays for both requests ...
            await link.session.get_chunk(chunks[3], wire(higher))
            # ... so the lower one, late, carries nothing new and is not needed: served.
            await link.session.get_chunk(chunks[4], wire(lower))
            state = await fetcher.payer.sync(link)
            assert state.total == higher.total
            assert state.consumed - state.paid == ALLOWANCE
            # A stale total on a request that does owe is refused, and nothing is served.
            with pytest.raises(RequestError) as refused:
                await link.session.get_chunk(chunks[5], wire(lower))
            assert refused.value.code == PaymentErrorCode.PAYMENT_TOTAL_LOWER
            assert (await fetcher.payer.sync(link)).consumed == state.consumed
            await host.stop()


async def test_a_request_waiting_for_room_does_not_sign_after_a_failure(tmp_path: Path) -> None:
    """A request that fails (here NOT_FOUND, its price counted by the payer's projection) while the
    window is full and another caller waits for room: that caller does not sign on the stale
    projection; it waits for the window to drain, resynchronises and goes alone."""
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 12, CHUNK)
    missing = hashlib.sha256(b"not on the host").digest()
    order = [addresses[0], missing, *addresses[1:]]
    prepared: list[tuple[bytes, int, bool]] = []  # (address, requests in flight before, link dirty)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            channel = str(await fetcher.open_channel(link, capacity=100_000))
            prepare: Callable[..., object] = fetcher.payer.window._prepare

            def watched(link: HostLink, request: Request, tally: object) -> object:
                prepared.append((request.chunk, link.machine.inflight, link.machine.dirty))
                return prepare(link, request, tally)

            fetcher.payer.window._prepare = watched  # type: ignore[method-assign, assignment]
            refused: list[RequestError] = []

            async def one(address: bytes) -> bytes | None:
                try:
                    return await fetcher.payer.get(link, address, expected_size=CHUNK)
                except RequestError as exc:
                    refused.append(exc)
                    return None

            assert await by_workers(order, one) == set(addresses)
            assert [exc.code for exc in refused] == [ErrorCode.NOT_FOUND]
            assert not any(dirty for _, _, dirty in prepared)  # nothing signed on a stale projection
            failed_at = [a for a, _, _ in prepared].index(missing)
            behind = [inflight for _, inflight, _ in prepared[failed_at + 1:]]
            assert max(behind[:WINDOW]) == WINDOW - 1  # the window was full around the failure ...
            assert 0 in behind  # ... and a request after it went alone
            payer_total = link.channel.total  # type: ignore[union-attr]
            await host.stop()
    total, _, paid, consumed, account_paid = host_books(host_dir, channel, fetcher.transport.identity.node_id.hex())
    assert total == paid == payer_total == len(addresses) * CHUNK_PRICE - ALLOWANCE  # the miss cost nothing
    assert consumed - account_paid == ALLOWANCE


async def test_a_failed_record_write_fails_its_requests_and_loses_no_payment(tmp_path: Path) -> None:
    """The payer's ledger refuses one write (a full disk) while a window is in flight: the requests
    whose records it held fail with that error, the link resynchronises, and the records are
    written with the next write, so at the end the payer's rows add up to what the host holds."""
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 16, CHUNK)
    failed: list[bytes] = []
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            channel = str(await fetcher.open_channel(link, capacity=100_000))
            record_payments = fetcher.ledger.record_payments
            writes: list[int] = []

            def full_once(entries: list[PaymentEntry]) -> object:
                writes.append(len(entries))
                if len(writes) == 3:
                    raise sqlite3.OperationalError("database or disk is full")
                return record_payments(entries)

            fetcher.ledger.record_payments = full_once  # type: ignore[method-assign, assignment]

            async def one(address: bytes) -> bytes:
                try:
                    return await fetcher.payer.get(link, address, expected_size=CHUNK)
                except sqlite3.OperationalError:
                    failed.append(address)
                    return await fetcher.payer.get(link, address, expected_size=CHUNK)  # after a resync

            assert await by_workers(addresses, one) == set(addresses)
            assert len(failed) == writes[2] >= 1  # every request of the refused write failed
            assert link.channel is not None and link.machine.inflight == 0 and not link.journal.unrecorded
            payer_total = link.channel.total
            payer_rows = fetcher.ledger.payments(channel_id=channel)
            await host.stop()
    total, _, paid, consumed, account_paid = host_books(host_dir, channel, fetcher.transport.identity.node_id.hex())
    assert sum(p.amount for p in payer_rows) == payer_total == total == paid  # nothing lost on either side
    assert [p.total for p in payer_rows] == sorted({p.total for p in payer_rows})  # still in signing order
    assert consumed - account_paid == ALLOWANCE


KILLS = 8
KILL_CHUNKS = 80
# Bigger chunks at a lower price (the same 64 sats each): sending one takes
# long enough that the host has recorded the requests behind it when it dies.
KILL_CHUNK = 512 * 1024
KILL_PRICE = 128
# The kill lands somewhere while a window of requests is in flight.
# A round's crash comes after 1 to KILL_AFTER_MOST more answers.
KILL_AFTER_MOST = 4


@pytest.mark.slow
async def test_host_killed_with_a_full_window_in_flight_costs_the_payer_nothing(tmp_path: Path) -> None:
    rng = random.Random(5)
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, KILL_CHUNKS, KILL_CHUNK)
    assert chunk_price(KILL_CHUNK, KILL_PRICE) == CHUNK_PRICE
    watch = Watch(KILL_CHUNK)
    args = ["--price-get", str(KILL_PRICE), "--free-allowance", str(ALLOWANCE)]
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            watch.instrument(fetcher)
            link = watch.watch(await fetcher.link(host))
            channel = str(await fetcher.open_channel(link, capacity=100_000))
            kills = interrupted = 0
            while len(watch.received) < KILL_CHUNKS:
                remaining = [a for a in addresses if a not in watch.received]
                killed, broke = await fetch_through_a_host_kill(
                    watch, fetcher, link, remaining, host, rng=rng if kills < KILLS else None,
                    after_most=KILL_AFTER_MOST)
                interrupted += broke
                if killed:
                    kills += 1
                    await host.restart()
                    link = watch.watch(await fetcher.link(host))  # CHANNEL_STATE: the host's total and recent charges
                    watch.check(link)
            assert kills == KILLS and host.starts == KILLS + 1
            assert interrupted > 0  # the crashes did land inside windows of requests
            assert watch.most_in_flight == WINDOW
            payer_total = link.channel.total  # type: ignore[union-attr]
            await host.stop()
    total, charged, paid, consumed, account_paid = host_books(host_dir, channel, fetcher.transport.identity.node_id.hex())
    assert {a.hex() for a in watch.received} <= charged  # recorded before served, across every crash
    assert total == paid == payer_total
    assert consumed - account_paid <= ALLOWANCE
    # Every chunk recorded and not delivered was redelivered free: not one sat paid twice.
    assert payer_total == KILL_CHUNKS * CHUNK_PRICE - ALLOWANCE


PAYER_KILLS = 5
PAYER_CHUNKS = 60


@pytest.mark.slow
async def test_payer_killed_with_a_full_window_in_flight_pays_nothing_twice(tmp_path: Path) -> None:
    """kill -9 of a payer fetching with a window: the host recorded the requests in flight and sent
    chunks the dead payer never kept; after a restart they are redelivered free, whichever of the
    recent ones they are, so both sides end on the exact total."""
    rng = random.Random(13)
    host_dir, payer_dir = tmp_path / "host", tmp_path / "payer"
    payer_dir.mkdir()
    addresses = seed_chunks(host_dir, PAYER_CHUNKS, CHUNK)
    listing = tmp_path / "addresses.txt"
    listing.write_text("\n".join(a.hex() for a in addresses))
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host:
            kills = 0
            channel = ""
            while True:
                argv = [sys.executable, "-m", "tests.helpers.payer_child", str(payer_dir), chain.url,
                        str(chain.cookie_path), host.node_id.hex(), str(host.port), str(listing), "0", str(WORKERS)]
                process = await trio.lowlevel.open_process(argv, cwd=str(REPO_ROOT), stdout=-1)
                assert process.stdout is not None
                kill_after = rng.randint(2, 10) if kills < PAYER_KILLS else None
                got = 0
                with trio.fail_after(120):
                    async for words in payer_lines(process):
                        if words[0] == "channel":
                            channel = words[1]
                        elif words[0] == "got":
                            got += 1
                            if kill_after is not None and got == kill_after:
                                process.kill()  # with a window of paid requests in flight
                await process.wait()
                if process.returncode == 0:
                    break
                kills += 1
                assert kills <= PAYER_KILLS, f"payer failed on its own (exit {process.returncode})"
            assert kills == PAYER_KILLS
            await host.stop()
    total, charged, paid, consumed, account_paid = host_books(host_dir, channel, load_identity(payer_dir).node_id.hex())
    with Ledger.open(payer_dir / LEDGER_FILE) as ledger:
        payer_record = ledger.channel(channel)
    assert payer_record is not None and payer_record.total == total == paid
    assert {a.hex() for a in addresses} <= charged
    assert consumed - account_paid <= ALLOWANCE
    assert total == PAYER_CHUNKS * CHUNK_PRICE - ALLOWANCE  # not one chunk paid twice


async def test_without_a_channel_errors_come_plain_and_a_refused_request_is_not_counted(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    first, second, third = seed_chunks(host_dir, 3, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            assert link.channel is None
            await fetcher.payer.get(link, first, expected_size=CHUNK)  # within the allowance
            with pytest.raises(RequestError) as missing:
                await fetcher.payer.get(link, bytes(32), expected_size=CHUNK)
            assert missing.value.code == ErrorCode.NOT_FOUND
            # Not served, not charged: the second chunk still fits the allowance (64 + 64 <= 138).
            await fetcher.payer.get(link, second, expected_size=CHUNK)
            with pytest.raises(RemotePaymentError) as owed:
                await fetcher.payer.get(link, third, expected_size=CHUNK)
            assert owed.value.code == PaymentErrorCode.INSUFFICIENT_PAYMENT
            assert owed.value.owed == 3 * CHUNK_PRICE - ALLOWANCE
            await host.stop()


async def test_a_payment_refused_last_is_taken_back_at_once_so_spent_equals_earned(tmp_path: Path) -> None:
    """The link's last request carries a payment and the host refuses it (NOT_FOUND): the payer asks the
    host what it recorded right away and takes that payment back, so its ledger equals the host's with
    nothing more asked of it (before, the two stayed one chunk's price apart until a next request)."""
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 4, CHUNK)
    missing = hashlib.sha256(b"not on the host").digest()
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(host_dir, chain, HOST_ARGS) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            channel = str(await fetcher.open_channel(link, capacity=100_000))
            for address in addresses:
                await fetcher.payer.get(link, address, expected_size=CHUNK)
            assert link.channel is not None
            served = link.channel.total
            assert served == len(addresses) * CHUNK_PRICE - ALLOWANCE
            tally = Tally()
            with pytest.raises(RequestError) as refused:
                await fetcher.payer.request(link, Kind.GET, missing, size=CHUNK, tally=tally)
            assert refused.value.code == ErrorCode.NOT_FOUND
            assert link.machine.paid == served + CHUNK_PRICE  # it went with a payment ...
            assert link.channel.total == served  # ... taken back: the next one signs from the host's total
            assert tally.signed == 0  # neither spent nor lost
            record = fetcher.ledger.channel(channel)
            payer_rows = fetcher.ledger.payments(channel_id=channel)
            spent = fetcher.ledger.account(host.node_id.hex(), Direction.OUT)
            await host.stop()
    assert record is not None and record.total == served
    assert sum(p.amount for p in payer_rows) == spent.paid == served
    total, charged, paid, consumed, account_paid = host_books(host_dir, channel, fetcher.transport.identity.node_id.hex())
    assert total == paid == account_paid == served
    assert missing.hex() not in charged
