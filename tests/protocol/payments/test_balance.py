"""The service balance step by step: reciprocity cancels, only the imbalance is paid, a freeloader is refused."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.identity import Identity
from protocol.payments.balance import (
    BALANCE_ACK_SIZE,
    BalanceAck,
    BalanceError,
    BalanceErrorCode,
    BalanceTerms,
    PeerBalance,
    view_gap_bound,
)

ALICE, BOB = Identity(b"\x0a" * 32), Identity(b"\x0b" * 32)
TERMS = BalanceTerms(payment_threshold=1_000, in_flight_limit=500, disconnect_threshold=3_000)


def ack(identity: Identity, peer: Identity, view: PeerBalance) -> BalanceAck:
    return BalanceAck.sign(identity, peer=peer.node_id, service_received=view.taken, payment_received=view.paid_in)


def exchange(alice: PeerBalance, bob: PeerBalance, price: int, alice_serves: bool) -> tuple[PeerBalance, PeerBalance]:
    """One request served and acknowledged, in the order the node does it."""
    if alice_serves:
        alice = alice.serve(price, TERMS)
        bob = bob.take(price)
        return alice.acknowledge(ack(BOB, ALICE, bob)), bob
    bob = bob.serve(price, TERMS)
    alice = alice.take(price)
    return alice, bob.acknowledge(ack(ALICE, BOB, alice))


def test_equal_service_both_ways_never_pays() -> None:
    alice, bob = PeerBalance(), PeerBalance()
    for _ in range(200):
        alice, bob = exchange(alice, bob, 300, alice_serves=True)
        alice, bob = exchange(alice, bob, 300, alice_serves=False)
        assert alice.payment_due(TERMS) == bob.payment_due(TERMS) == 0
    assert alice.net == bob.net == 0 and alice.given == bob.given == 60_000


def test_three_to_one_pays_exactly_the_imbalance() -> None:
    alice, bob = PeerBalance(), PeerBalance()
    paid = 0
    for _ in range(100):
        for _ in range(3):
            alice, bob = exchange(alice, bob, 100, alice_serves=True)
        alice, bob = exchange(alice, bob, 100, alice_serves=False)
        due = bob.payment_due(TERMS)
        if due:
            assert due == -bob.net >= TERMS.payment_threshold
            bob = bob.pay(due)
            alice = alice.receive_payment(due)
            bob = bob.acknowledge(ack(ALICE, BOB, alice))
            paid += due
    # Alice gave 30,000 and took 10,000: 20,000 owed, all of it paid but what stays below the threshold.
    assert alice.given == 30_000 and alice.taken == 10_000
    assert paid + (-bob.net) == 20_000 and -bob.net < TERMS.payment_threshold
    assert alice.net == -bob.net and alice.paid_in == bob.paid_out == paid


def test_a_freeloader_is_refused_at_the_disconnect_threshold() -> None:
    alice, bob = PeerBalance(), PeerBalance()
    served = 0
    with pytest.raises(BalanceError) as refused:
        while True:
            alice, bob = exchange(alice, bob, 250, alice_serves=True)
            served += 250
    assert refused.value.code is BalanceErrorCode.DISCONNECT_THRESHOLD
    assert served == alice.net == TERMS.disconnect_threshold
    assert bob.payment_due(TERMS) == TERMS.disconnect_threshold  # it could have paid all along


def test_unacknowledged_service_fills_the_window() -> None:
    alice = PeerBalance().serve(300, TERMS)
    with pytest.raises(BalanceError) as full:
        alice.serve(201, TERMS)
    assert full.value.code is BalanceErrorCode.WINDOW_FULL
    assert alice.serve(200, TERMS).given == 500


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 2_000), steps=st.lists(st.tuples(st.sampled_from("rsa"), st.integers(1, 2_000)),
                                                   max_size=80))
def test_a_requester_within_the_limit_is_never_refused_window_full(limit: int, steps: list[tuple[str, int]]) -> None:
    """specs/payments.md §Service balance, rule 1: acks go on the ordered session ahead of the next request."""
    terms = BalanceTerms(payment_threshold=1, in_flight_limit=limit, disconnect_threshold=10**12)
    server, requester = PeerBalance(), PeerBalance()
    to_server: deque[tuple[str, int]] = deque()  # requests and the acks' service_received, in send order
    to_requester: deque[int] = deque()  # service answered
    outstanding: deque[int] = deque()  # prices of requests sent and not yet received
    for action, price in steps:
        if action == "r" and sum(outstanding) + price <= limit:
            outstanding.append(price)
            to_server.append(("request", price))
        elif action == "s" and to_server:
            kind, value = to_server.popleft()
            if kind == "request":
                server = server.serve(value, terms)  # never WINDOW_FULL
                to_requester.append(value)
            else:
                server = server.acknowledge(BalanceAck.sign(BOB, peer=ALICE.node_id, service_received=value,
                                                            payment_received=0))
        elif action == "a" and to_requester:
            requester = requester.take(to_requester.popleft())
            outstanding.popleft()
            to_server.append(("ack", requester.taken))


def test_resync_forgives_unacknowledged_service_and_takes_back_an_unrecorded_payment() -> None:
    alice, bob = exchange(PeerBalance(), PeerBalance(), 400, alice_serves=False)
    alice, bob = exchange(alice, bob, 400, alice_serves=False)
    alice, bob = exchange(alice, bob, 400, alice_serves=False)
    alice = alice.pay(alice.payment_due(TERMS))  # lost with the session: Bob never recorded it
    bob = bob.serve(300, TERMS)  # Bob recorded it, crashed before sending
    assert alice.net + bob.net == 1_200 + 300 <= view_gap_bound(TERMS)
    alice, bob = alice.resync(ack(BOB, ALICE, bob)), bob.resync(ack(ALICE, BOB, alice))
    assert alice.net == -bob.net == -1_200 and alice.unacknowledged == bob.unacknowledged == 0
    assert alice.payment_due(TERMS) == 1_200  # paid again, at the same channel total


def test_ack_round_trips_and_is_bound_to_its_signer() -> None:
    signed = BalanceAck.sign(ALICE, peer=BOB.node_id, service_received=12_345, payment_received=678)
    raw = signed.serialize()
    assert len(raw) == BALANCE_ACK_SIZE == 120
    assert raw[:20] == ALICE.node_id and raw[20:40] == BOB.node_id
    assert raw[40:56] == (12_345).to_bytes(8, "big") + (678).to_bytes(8, "big")
    assert BalanceAck.parse(raw) == signed and signed.verify(ALICE.public_key)
    assert not signed.verify(BOB.public_key)
    forged = BalanceAck.parse(raw[:40] + (12_346).to_bytes(8, "big") + raw[48:])
    assert not forged.verify(ALICE.public_key)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 119, b"\x00" * 121, b"\x01" * 20 + b"\x01" * 20 + b"\x00" * 80])
def test_malformed_acks_are_refused(raw: bytes) -> None:
    with pytest.raises(BalanceError) as bad:
        BalanceAck.parse(raw)
    assert bad.value.code is BalanceErrorCode.BAD_BALANCE_ACK


def test_an_ack_above_what_was_sent_or_below_an_earlier_one_is_refused() -> None:
    alice = PeerBalance().serve(100, TERMS)
    too_much = BalanceAck.sign(BOB, peer=ALICE.node_id, service_received=101, payment_received=0)
    with pytest.raises(BalanceError) as bad:
        alice.acknowledge(too_much)
    assert bad.value.code is BalanceErrorCode.BAD_BALANCE_ACK
    alice = alice.acknowledge(BalanceAck.sign(BOB, peer=ALICE.node_id, service_received=100, payment_received=0))
    with pytest.raises(BalanceError):
        alice.resync(BalanceAck.sign(BOB, peer=ALICE.node_id, service_received=50, payment_received=0))


def test_own_mistakes_are_refused() -> None:
    with pytest.raises(BalanceError):
        PeerBalance().pay(1)  # nothing owed
    owing = PeerBalance(taken=2_000)
    with pytest.raises(BalanceError):
        owing.pay(2_001)
    with pytest.raises(BalanceError):
        owing.pay(1_000).pay(1_000)  # the first is still unacknowledged
    assert owing.pay(1_000).payment_due(TERMS) == 0
    with pytest.raises(BalanceError):
        BalanceTerms(payment_threshold=1_000, in_flight_limit=500, disconnect_threshold=1_999)
    with pytest.raises(BalanceError):
        PeerBalance().serve(-1, TERMS)


def test_a_payment_that_never_left_is_withdrawn_and_only_it() -> None:
    owing = PeerBalance(taken=2_000)
    paying = owing.pay(2_000)
    assert paying.withdraw_payment(2_000) == owing and owing.payment_due(TERMS) == 2_000  # due again, exactly
    with pytest.raises(BalanceError):
        paying.withdraw_payment(2_001)
    with pytest.raises(BalanceError):  # acknowledged: it left, and arrived
        paying.acknowledge(BalanceAck.sign(BOB, peer=ALICE.node_id, service_received=0, payment_received=2_000)
                           ).withdraw_payment(1)
