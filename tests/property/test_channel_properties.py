"""Hypothesis: channel totals only grow, stay within capacity minus fee, and every commitment balances."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bitcoin import (
    ChannelExhaustedError,
    NothingToCloseError,
    PayeeChannel,
    PayerChannel,
    commitment_transaction,
)
from tests.helpers.kernel import assert_valid
from tests.protocol.bitcoin.channel_fixtures import PAYEE_KEY, PAYER_KEY, make_params, spent


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(2_000, 5_000_000),
    fee_rate=st.integers(1, 5),
    amounts=st.lists(st.integers(1, 400_000), min_size=1, max_size=25),
)
def test_payment_sequences_keep_the_channel_invariants(capacity: int, fee_rate: int, amounts: list[int]) -> None:
    params = make_params(capacity=capacity, fee_rate=fee_rate)
    payer, payee = PayerChannel(params, PAYER_KEY), PayeeChannel(params, PAYEE_KEY)
    previous = 0
    for amount in amounts:
        try:
            payment = payer.pay(amount)
        except ChannelExhaustedError:
            assert previous + amount > params.max_total
            assert payer.total == previous
            continue
        assert payee.accept(payment, owed=amount) == payment.total
        assert payment.total == previous + amount > previous
        assert payment.total <= params.capacity - params.commitment_fee
        tx = commitment_transaction(params, payment.total)
        by_script = {o.script_pubkey: o.value for o in tx.outputs}
        payee_value = by_script.get(params.payee_script, 0)
        change = by_script.get(params.payer_script, 0)
        # Outputs below the dust limit are dropped and their value goes to the miners.
        dropped = (payment.total - payee_value) + (params.max_total - payment.total - change)
        assert payee_value in (0, payment.total) and change in (0, params.max_total - payment.total)
        assert all(0 < v < params.dust_limit for v in (payment.total - payee_value, params.max_total - payment.total - change) if v)
        assert payee_value + change + params.commitment_fee + dropped == params.capacity
        if payee_value and change:
            assert payee_value + change + params.commitment_fee == params.capacity
        if payee_value:
            # Every commitment the payee can close is valid to Bitcoin Core.
            close = payee.close_transaction()
            assert close.outputs == tx.outputs
            assert_valid(close, spent(params))
        previous = payment.total
    assert payee.total == payer.total == previous
    if previous < params.dust_limit:
        with pytest.raises(NothingToCloseError):
            payee.close_transaction()
