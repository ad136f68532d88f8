"""Terms ``offer`` (specs/payments.md §Terms, §Service balance): optional, signed only when non-zero."""

from __future__ import annotations

import pytest

from protocol.payments import LocalPaymentError, PaymentErrorCode
from protocol.payments.balance import in_balance_mode
from protocol.payments.terms import MAX_OFFER
from tests.protocol.payments.test_terms import HOST, terms


def test_no_offer_encodes_and_signs_as_before() -> None:
    signed = terms().signed(HOST)
    assert "offer" not in signed.to_wire()
    assert signed.signed_bytes().endswith((2).to_bytes(4, "big"))  # fee_rate is still the last field signed
    assert terms(offer=0).signed(HOST) == signed


def test_offer_round_trips_and_is_signed() -> None:
    signed = terms(offer=100 * 10**9).signed(HOST)
    wire = signed.to_wire()
    assert wire["offer"] == 100 * 10**9
    parsed = type(signed).from_wire(wire, HOST.public_key)
    assert parsed.offer == 100 * 10**9 and parsed == signed
    tampered = dict(wire, offer=200 * 10**9)  # the signature covers the offer
    with pytest.raises(LocalPaymentError) as caught:
        type(signed).from_wire(tampered, HOST.public_key)
    assert caught.value.code == PaymentErrorCode.BAD_TERMS
    stripped = {k: v for k, v in wire.items() if k != "offer"}  # nor can it be dropped
    with pytest.raises(LocalPaymentError):
        type(signed).from_wire(stripped, HOST.public_key)


@pytest.mark.parametrize("offer", [0, -1, MAX_OFFER + 1, True, "1"])
def test_bad_offers_are_refused(offer: object) -> None:
    wire = terms().signed(HOST).to_wire()
    with pytest.raises(LocalPaymentError) as caught:
        type(terms()).from_wire(dict(wire, offer=offer), HOST.public_key)
    assert caught.value.code == PaymentErrorCode.BAD_TERMS


def test_balance_mode_needs_both_offers() -> None:
    assert in_balance_mode(1, 1)
    assert not in_balance_mode(0, 10**9) and not in_balance_mode(10**9, 0) and not in_balance_mode(0, 0)
