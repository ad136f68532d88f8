"""Payee accounting: free allowance, amount owed, redelivery."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.payments import LocalPaymentError, PaymentErrorCode, PeerAccount


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
