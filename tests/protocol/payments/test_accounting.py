"""Payee accounting: free allowance, amount owed, redelivery."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.payments import MAX_PAID_WINDOW, REDELIVERY_DEPTH, LocalPaymentError, PaymentErrorCode, PeerAccount, paid_window


def test_free_allowance_then_exact_payment_per_chunk() -> None:
    account = PeerAccount()
    for i in range(3):  # 3 x 100 within a 300 allowance
        assert account.owed(100, 300) == 0
        account = account.charge(chunk=bytes([i]), kind="get", price=100, increment=0, allowance=300)
    assert account.owed(100, 300) == 100
    with pytest.raises(LocalPaymentError) as info:
        account.charge(chunk=b"x", kind="get", price=100, increment=99, allowance=300)
    assert info.value.code == PaymentErrorCode.INSUFFICIENT_PAYMENT and info.value.owed == 100
    account = account.charge(chunk=b"x", kind="get", price=100, increment=150, allowance=300)
    assert account.owed(100, 300) == 50  # the extra 50 is credit
    assert account.is_redelivery(b"x", "get") and not account.is_redelivery(b"x", "put")


def test_partial_allowance_is_used_first() -> None:
    account = PeerAccount().charge(chunk=b"a", kind="get", price=70, increment=0, allowance=100)
    assert account.owed(70, 100) == 40


@given(
    allowance=st.integers(0, 1_000),
    steps=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 300)), max_size=50),
)
def test_owed_never_exceeds_one_price_and_debt_stays_within_allowance(
    allowance: int, steps: list[tuple[int, int]]
) -> None:
    account = PeerAccount()
    for price, extra in steps:
        owed = account.owed(price, allowance)
        assert 0 <= owed <= price
        account = account.charge(chunk=b"c", kind="get", price=price, increment=owed + extra, allowance=allowance)
        assert account.consumed - account.paid <= allowance


def test_recent_charges_are_redelivered_up_to_the_depth() -> None:
    account = PeerAccount()
    chunks = [bytes([i]) * 32 for i in range(REDELIVERY_DEPTH + 1)]
    for chunk in chunks:
        account = account.charge(chunk=chunk, kind="get", price=10, increment=10, allowance=0)
    assert len(account.recent) == REDELIVERY_DEPTH
    assert not account.is_redelivery(chunks[0], "get")  # pushed out by the newer ones
    assert all(account.is_redelivery(chunk, "get") for chunk in chunks[1:])
    assert not account.is_redelivery(chunks[-1], "put")
    again = account.charge(chunk=chunks[1], kind="get", price=10, increment=10, allowance=0)
    assert again.recent[-1] == (chunks[1], "get") and len(again.recent) == REDELIVERY_DEPTH


def test_paid_window_follows_the_allowance() -> None:
    assert paid_window(100, 0) == 1
    assert paid_window(100, 99) == 1
    assert paid_window(100, 100) == 2
    assert paid_window(100, 250) == 3
    assert paid_window(100, 10**6) == MAX_PAID_WINDOW
    assert paid_window(0, 0) == MAX_PAID_WINDOW  # free requests: nothing at stake


def _pipeline(price: int, allowance: int, window: int, count: int, fail: set[int]) -> int:
    """Run ``count`` requests with ``window`` in flight; return the worst exposure seen.

    The payer signs each request's smallest increment against its projected
    account (as if every request before it was charged); the payee charges
    in order; requests in ``fail`` are refused uncharged, after which the
    payer lets its window drain and adopts the payee's account (CHANNEL_STATE)
    before it signs again, re-sending a total the payee never recorded
    (``next_total``).  Exposure is what the payer signed minus the value it
    received.
    """
    payee = PeerAccount()
    projected = PeerAccount()
    signed = received = worst = 0
    inflight: list[tuple[int, int]] = []  # (index, total carried)
    index = 0
    dirty = False
    while index < count or inflight:
        if dirty and not inflight:
            projected, dirty = payee, False  # resynchronised
        while index < count and len(inflight) < window and not dirty:
            owed = projected.owed(price, allowance)
            signed = max(signed, projected.paid + owed)
            projected = projected.charge(chunk=b"%d" % index, kind="get", price=price, increment=owed,
                                         allowance=allowance)
            inflight.append((index, signed))
            worst = max(worst, signed - received)
            index += 1
        done, total = inflight.pop(0)
        increment = total - payee.paid
        if done in fail:
            dirty = True  # refused before charging; nothing delivered
            continue
        payee = payee.charge(chunk=b"%d" % done, kind="get", price=price, increment=increment, allowance=allowance)
        assert payee.consumed - payee.paid <= allowance  # never served past the allowance
        received += price
        worst = max(worst, signed - received)
    return worst


@given(price=st.integers(1, 500), allowance=st.integers(0, 2_000), count=st.integers(1, 40),
       fail=st.sets(st.integers(0, 39), max_size=5))
def test_the_paid_window_keeps_exposure_within_one_price(price: int, allowance: int, count: int, fail: set[int]) -> None:
    window = paid_window(price, allowance)
    assert _pipeline(price, allowance, window, count, set()) <= price
    # A refused request's payment rides on the next one: still one price at most.
    assert _pipeline(price, allowance, window, count, fail) <= price


def test_one_more_request_in_flight_would_break_the_bound() -> None:
    # 100 sats a chunk, 100 allowance: window 2 keeps exposure at 100; 3 would reach 200.
    assert _pipeline(100, 100, paid_window(100, 100), 10, set()) == 100
    assert _pipeline(100, 100, paid_window(100, 100) + 1, 10, set()) == 200
