"""The service balance in the exchange (specs/payments.md §Service balance), in process over loopback.

Two nodes that both offer storage serve each other without channel
payments: each request raises the server's ``given`` before it is served,
the requester records ``taken`` and acknowledges it; their views agree once
the acknowledgements land.  A node that does not offer is paid as before,
and a peer that takes and never gives back is refused at the disconnect
threshold.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest
import trio

from node.ledger import Ledger
from node.transport import RequestError, Session
from protocol.payments import MIB, Kind, PaymentError, PaymentErrorCode, chunk_price
from protocol.payments.balance import BalanceAck, BalanceErrorCode
from protocol.wire import ChannelMessage, MessageType, PutChunk
from tests.helpers.balance import (CHUNK_SIZE, TEST_TERMS, BalancePeer, open_balance_peer, open_channel,
                                               random_chunk, settled)

OFFER = 10 * 10**9
PUT_PRICE = chunk_price(CHUNK_SIZE, 300)
GET_PRICE = chunk_price(CHUNK_SIZE, 100)


async def put_many(me: BalancePeer, host: BalancePeer, count: int) -> list[bytes]:
    link = await me.link(host)
    addresses = []
    for _ in range(count):
        address, data = random_chunk()
        assert await me.payer.put(link, address, data)
        addresses.append(address)
    return addresses


async def send_ack(session: Session, signer: BalancePeer, peer: BalancePeer, service_received: int) -> None:
    """Send ``signer``'s acknowledgement of ``service_received`` by hand, as a peer with its own code would."""
    ack = BalanceAck.sign(signer.identity, peer=peer.node_id, service_received=service_received, payment_received=0)
    await session.notify(ChannelMessage(request_id=0, type=MessageType.BALANCE_ACK, fields=ack.to_wire()))


def assert_views_agree(a: BalancePeer, b: BalancePeer) -> None:
    view_a, view_b = a.balance.view(b.node_id), b.balance.view(a.node_id)
    assert view_a is not None and view_b is not None
    assert view_a.net == -view_b.net
    assert (view_a.given, view_a.taken) == (view_b.taken, view_b.given)
    # What is on disk is what is in memory, but for acknowledgements (written lazily).
    for me, other, view in ((a, b, view_a), (b, a, view_b)):
        stored = me.view(other)
        assert (stored.given, stored.taken, stored.paid_in, stored.paid_out) == (
            view.given, view.taken, view.paid_in, view.paid_out)


async def test_equal_service_both_ways_needs_no_payment(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        async with trio.open_nursery() as nursery:  # both ways at once
            nursery.start_soon(put_many, a, b, 12)
            nursery.start_soon(put_many, b, a, 12)
        await settled(a, b)
        assert_views_agree(a, b)
        view = a.balance.view(b.node_id)
        assert view is not None and view.given == view.taken == 12 * PUT_PRICE and view.net == 0
        assert abs(view.net) < TEST_TERMS.payment_threshold
        for peer in (a, b):
            assert peer.ledger.payments() == [] and peer.ledger.channels() == []  # no channel, no payment
            assert len(peer.store) == 12
            assert peer.balance.acks_sent >= 12


async def test_unequal_service_stays_within_the_threshold_and_views_agree(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        addresses = await put_many(a, b, 5)
        link = await a.link(b)
        for address in addresses:  # and fetch them back: GETs are service too
            assert len(await a.payer.get(link, address)) == CHUNK_SIZE
        await settled(a, b)
        assert_views_agree(a, b)
        view = b.balance.view(a.node_id)
        assert view is not None and view.net == 5 * (PUT_PRICE + GET_PRICE) == view.given


async def test_the_taker_pays_exactly_its_debt_through_its_channel_once_past_the_threshold(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        channel = open_channel(a, b)
        await put_many(b, a, 4)  # A gave B some service first
        count = 3 * 4 + 20  # then A takes more than three times as much: past the payment threshold
        await put_many(a, b, count)
        await settled(a, b)
        assert_views_agree(a, b)
        view = a.balance.view(b.node_id)
        assert view is not None and view.paid_out > 0 and view.acked_paid_out == view.paid_out
        # What A paid is exactly the imbalance at the moments it paid: now A owes less than the threshold.
        assert view.paid_out == view.taken - view.given + view.net
        assert 0 <= -view.net < TEST_TERMS.payment_threshold
        assert view.taken - view.given == (count - 4) * PUT_PRICE
        # Recorded like any payment on both sides: paid == earned, the channel's total is the sum.
        spent = [p for p in a.ledger.payments() if p.direction == "out"]
        earned = [p for p in b.ledger.payments() if p.direction == "in"]
        assert {p.kind for p in spent} == {p.kind for p in earned} == {Kind.SETTLE}
        assert sum(p.amount for p in spent) == sum(p.amount for p in earned) == view.paid_out
        for ledger in (a.ledger, b.ledger):
            record = ledger.channel(str(channel))
            assert record is not None and record.total == view.paid_out
        assert b.ledger.earnings()["balances"]["per_peer"][a.node_id.hex()]["net"] == -view.net


async def test_a_taker_without_a_channel_is_asked_for_one_and_each_request_is_served_once(tmp_path: Path) -> None:
    # As PaidPeers does: a request refused for want of a channel is sent again once one is open.  It must
    # not have been served the first time, or the taker would be served and charged for it twice.
    count = TEST_TERMS.payment_threshold // PUT_PRICE + 4
    refusals = []
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        link = await a.link(b)
        for _ in range(count):
            address, data = random_chunk()
            try:
                assert await a.payer.put(link, address, data)
            except PaymentError as exc:
                refusals.append(exc)
                await settled(a, b)
                assert b.ledger.balance(a.node_id.hex()).given == len(b.store) * PUT_PRICE  # unsent
                channel = open_channel(a, b)
                link = await a.link(b)  # with the channel now
                assert await a.payer.put(link, address, data)
        await settled(a, b)
        assert_views_agree(a, b)
        assert len(refusals) == 1 and refusals[0].code == PaymentErrorCode.INSUFFICIENT_PAYMENT
        assert refusals[0].owed is not None and refusals[0].owed >= TEST_TERMS.payment_threshold
        view = a.balance.view(b.node_id)
        assert view is not None and len(b.store) == count and view.taken == count * PUT_PRICE  # each once
        # Paid exactly what it owed when it paid: what it owes now is below the threshold.
        assert view.paid_out == view.taken + view.net > 0 and 0 <= -view.net < TEST_TERMS.payment_threshold
        record = b.ledger.channel(str(channel))
        assert record is not None and record.total == view.paid_out == b.view(a).paid_in


async def test_a_taker_that_never_gives_back_is_refused_at_the_disconnect_threshold(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        # A freeloader: it acknowledges what it takes (so its window moves) and never serves or pays.
        session = await a.transport.connect(b.node_id, "127.0.0.1", b.transport.port)

        await send_ack(session, a, b, 0)
        served = 0
        with pytest.raises(RequestError) as caught:
            for _ in range(TEST_TERMS.disconnect_threshold // PUT_PRICE + 2):
                address, data = random_chunk()
                await session.request(PutChunk(request_id=0, address=address, data=data))
                served += 1
                await send_ack(session, a, b, served * PUT_PRICE)
        assert caught.value.code == BalanceErrorCode.DISCONNECT_THRESHOLD
        assert served == TEST_TERMS.disconnect_threshold // PUT_PRICE  # served up to the threshold, not past it
        view = b.balance.view(a.node_id)
        assert view is not None and view.net == served * PUT_PRICE <= TEST_TERMS.disconnect_threshold
        assert len(b.store) == served and b.ledger.payments() == []


async def test_a_peer_that_never_acknowledges_is_refused_at_the_in_flight_limit(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        session = await a.transport.connect(b.node_id, "127.0.0.1", b.transport.port)
        served = 0
        with pytest.raises(RequestError) as caught:
            for _ in range(TEST_TERMS.in_flight_limit // PUT_PRICE + 2):
                address, data = random_chunk()
                await session.request(PutChunk(request_id=0, address=address, data=data))  # no payment, no ack
                served += 1
        assert caught.value.code == BalanceErrorCode.WINDOW_FULL
        assert served == TEST_TERMS.in_flight_limit // PUT_PRICE


async def test_a_stale_acknowledgement_is_ignored_and_a_forged_one_drops_the_session(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        await put_many(a, b, 3)
        await settled(a, b)
        before = b.balance.view(a.node_id)
        link = await a.link(b)
        # An older acknowledgement overtaken on the way: cumulative, it says nothing new.
        await send_ack(link.session, a, b, PUT_PRICE)
        await put_many(a, b, 1)
        await settled(a, b)
        assert link.session.is_open
        view = b.balance.view(a.node_id)
        assert before is not None and view is not None and view.acked_given == view.given == before.given + PUT_PRICE
        # One that claims A received service B never gave (above B's given) drops the session, changing nothing.
        await send_ack(link.session, a, b, 10**6)
        with trio.fail_after(10):
            await link.session.wait_closed()
        assert b.balance.view(a.node_id) == view


async def test_a_node_that_offers_nothing_is_paid_as_before(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=0) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        link = await a.link(b)
        address, data = random_chunk(MIB)
        with pytest.raises(PaymentError) as caught:  # no allowance, no channel: the paid path asks for sats
            await a.payer.put(link, address, data)
        assert caught.value.code == PaymentErrorCode.INSUFFICIENT_PAYMENT
        assert b.balance.view(a.node_id) is None and a.balance.acks_sent == b.balance.acks_sent == 0


async def test_a_payment_lost_in_the_payees_crash_is_counted_from_its_channel_record(tmp_path: Path) -> None:
    # The payee charged the payment through the channel, then stopped before counting it in the balance:
    # on restart its view counts it from the payment rows, and its acknowledgement says so.
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        open_channel(a, b)
        await put_many(a, b, TEST_TERMS.payment_threshold // PUT_PRICE + 1)
        await settled(a, b)
        paid = b.ledger.balance(a.node_id.hex()).paid_in
        assert paid > 0
    # B's balance row as if written before the payment was counted.
    with Ledger.open(tmp_path / "b" / "ledger.sqlite3") as ledger:
        row = ledger.balance(a.node_id.hex())
        ledger.record_balance(a.node_id.hex(), dataclasses.replace(row, paid_in=0))
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        await put_many(a, b, 1)
        await settled(a, b)
        assert_views_agree(a, b)
        view = b.balance.view(a.node_id)
        assert view is not None and view.paid_in == paid


async def test_a_payment_the_payee_never_recorded_is_taken_back_and_paid_again_exactly(tmp_path: Path) -> None:
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        channel = open_channel(a, b)
        await put_many(a, b, TEST_TERMS.payment_threshold // PUT_PRICE + 1)
        await settled(a, b)
        lost = a.ledger.balance(b.node_id.hex()).paid_out
        assert lost > 0
    # B lost the payment (never recorded): its ledger as before it.
    conn = sqlite3.connect(tmp_path / "b" / "ledger.sqlite3")
    with conn:
        conn.execute("DELETE FROM payments WHERE kind = 'settle'")
        conn.execute("UPDATE channels SET total = 0, payer_sig = NULL")
        conn.execute("UPDATE accounts SET paid = 0")
        conn.execute("UPDATE balances SET paid_in = 0")
    conn.close()
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        await put_many(a, b, lost // PUT_PRICE + 1)  # A owes the lost payment again, and more
        await settled(a, b)
        assert_views_agree(a, b)
        view = a.balance.view(b.node_id)
        assert view is not None and 0 < view.paid_out and 0 <= -view.net < TEST_TERMS.payment_threshold
        record = b.ledger.channel(str(channel))
        earned = sum(p.amount for p in b.ledger.payments() if p.kind == Kind.SETTLE)
        assert record is not None and record.total == earned == view.paid_out  # paid exactly once


@pytest.mark.parametrize("failing", ["record_balance", "record_payments"])
async def test_a_payment_whose_record_failed_is_withdrawn_and_the_next_pays_exactly_the_debt(
        tmp_path: Path, failing: str) -> None:
    # The payer's ledger refuses one write of a balance payment (a full disk): its balance row, or its
    # payment row.  The payment never leaves; the next one must pay what is owed then, not this one again
    # on top of it (a channel total left advanced in memory would).
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        channel = open_channel(a, b)
        write = getattr(a.ledger, failing)
        refused = []

        def full_once(*args: object, **kwargs: object) -> object:
            paying = args[1].paid_out > 0 if failing == "record_balance" else True  # type: ignore[attr-defined]
            if paying and not refused:
                refused.append(args)
                raise sqlite3.OperationalError("database or disk is full")
            return write(*args, **kwargs)

        setattr(a.ledger, failing, full_once)
        count = 3 * (TEST_TERMS.payment_threshold // PUT_PRICE) + 2  # the debt passes the threshold 3 times
        await put_many(a, b, count)
        await settled(a, b)
        assert len(refused) == 1
        assert_views_agree(a, b)
        view = a.balance.view(b.node_id)
        assert view is not None and view.taken == count * PUT_PRICE
        assert view.paid_out == view.taken + view.net and 0 <= -view.net < TEST_TERMS.payment_threshold
        spent = [p for p in a.ledger.payments() if p.direction == "out"]
        for ledger in (a.ledger, b.ledger):
            record = ledger.channel(str(channel))
            assert record is not None and record.total == view.paid_out == sum(p.amount for p in spent)
        assert b.view(a).paid_in == view.paid_out  # paid exactly, recorded on both sides


async def test_a_link_made_again_over_its_session_takes_back_no_payment_the_host_is_still_recording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A link made again over the same session (as a caller does to pick up a channel) must not resynchronise
    # as if the session were new: the host handles a session's messages concurrently, so it may answer the
    # CHANNEL_STATE before it records the one-way balance payment sent just before on that session.
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        channel = open_channel(a, b)
        arrived, release = trio.Event(), trio.Event()
        charge = b.server.book.charge

        async def held(peer: bytes, *, kind: Kind, **rest: object) -> int:
            if kind is Kind.SETTLE:  # the balance payment waits here, not yet recorded by b
                arrived.set()
                await release.wait()
            return await charge(peer, kind=kind, **rest)  # type: ignore[arg-type]

        monkeypatch.setattr(b.server.book, "charge", held)
        link = await a.link(b)
        signed = 0
        while not signed:
            address, data = random_chunk()
            signed = (await a.payer.request(link, Kind.PUT, address, data)).signed
        with trio.fail_after(10):
            await arrived.wait()
        again = await a.payer.link(link.session)  # CHANNEL_STATE answered while the payment waits
        assert again.machine.unanswered and not again.machine.may_take_back
        release.set()
        await settled(a, b)
        spent = a.ledger.earnings()["per_peer"].get(b.node_id.hex(), {}).get("spent", 0)
        assert spent == b.ledger.earnings()["per_peer"][a.node_id.hex()]["earned"] == signed
        mine, theirs = a.ledger.channel(str(channel)), b.ledger.channel(str(channel))
        assert mine is not None and theirs is not None and mine.total == theirs.total == signed
