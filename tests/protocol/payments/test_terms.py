"""Terms: signing, wire round trip, bounds, rounding of prices."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.identity import Identity
from protocol.payments import MIB, LocalPaymentError, PaymentErrorCode, Terms, chunk_price

HOST = Identity(bytes(range(32)))
OTHER = Identity(bytes(32))
PUBKEY = bytes([2]) + bytes(range(1, 33))


def terms(**overrides: object) -> Terms:
    values: dict[str, object] = dict(
        price_per_mib_get=100, price_per_mib_put=300, retention_seconds=86_400 * 30, free_allowance=250,
        min_capacity=20_000, expiry_window=144, min_confirmations=1, fee_rate=2, payment_pubkey=PUBKEY,
        identity_key=HOST.public_key,
    )
    values.update(overrides)
    return Terms(**values)  # type: ignore[arg-type]


def test_chunk_price_rounds_up_per_chunk() -> None:
    assert chunk_price(MIB, 100) == 100
    assert chunk_price(1, 100) == 1  # never free at a non-zero price
    assert chunk_price(MIB // 2 + 1, 3) == 2  # 1.5000029 -> 2
    assert chunk_price(0, 100) == 0
    assert chunk_price(MIB * 4, 0) == 0
    with pytest.raises(ValueError):
        chunk_price(-1, 1)


def test_signed_terms_round_trip_and_verify() -> None:
    signed = terms().signed(HOST)
    wire = signed.to_wire()
    assert Terms.from_wire(wire, HOST.public_key) == signed
    assert signed.get_price(MIB) == 100 and signed.put_price(MIB // 4) == 75


@pytest.mark.parametrize("field", ["price_per_mib_get", "free_allowance", "fee_rate", "payment_pubkey"])
def test_tampered_terms_are_refused(field: str) -> None:
    wire = terms().signed(HOST).to_wire()
    wire[field] = PUBKEY[:1] + bytes(32) if field == "payment_pubkey" else wire[field] + 1
    with pytest.raises(LocalPaymentError) as info:
        Terms.from_wire(wire, HOST.public_key)
    assert info.value.code == PaymentErrorCode.BAD_TERMS


def test_terms_signed_by_another_identity_are_refused() -> None:
    wire = terms().signed(HOST).to_wire()
    with pytest.raises(LocalPaymentError):
        Terms.from_wire(wire, OTHER.public_key)
    with pytest.raises(ValueError):
        terms().signed(OTHER)


@pytest.mark.parametrize(
    "wire_change",
    [
        {"price_per_mib_get": -1},
        {"price_per_mib_get": 10**9},
        {"fee_rate": 1.5},
        {"min_capacity": True},
        {"payment_pubkey": b"\x04" + bytes(32)},
        {"signature": b"short"},
        {"extra": 1},
    ],
)
def test_malformed_terms_maps_are_refused(wire_change: dict[str, object]) -> None:
    wire = terms().signed(HOST).to_wire()
    wire.update(wire_change)
    with pytest.raises(LocalPaymentError) as info:
        Terms.from_wire(wire, HOST.public_key)
    assert info.value.code == PaymentErrorCode.BAD_TERMS


def test_missing_field_and_non_map_are_refused() -> None:
    wire = terms().signed(HOST).to_wire()
    del wire["retention_seconds"]
    for bad in (wire, [1, 2], None):
        with pytest.raises(LocalPaymentError):
            Terms.from_wire(bad, HOST.public_key)


def test_signed_bytes_layout() -> None:
    t = terms()
    raw = t.signed_bytes()
    assert raw.startswith(b"mu:terms:v1" + HOST.public_key + PUBKEY)
    assert len(raw) == 11 + 32 + 33 + 5 * 8 + 3 * 4
    assert dataclasses.replace(t, fee_rate=3).signed_bytes() != raw
