"""Bytes from peers: every decoder fails only with its own clear error, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bitcoin import (
    AddressError,
    ChannelParams,
    ChannelParamsError,
    DecodeError,
    MalformedPaymentError,
    PayeeChannel,
    PayerChannel,
    SignedCommitment,
    PaymentError,
    Transaction,
    decode_address,
)
from tests.protocol.bitcoin.channel_fixtures import PAYEE_KEY, PAYER_KEY, make_params
from tests.protocol.bitcoin.test_serialize import WITNESS_TX

VALID_TX = bytes.fromhex(WITNESS_TX)
PARAMS = make_params()
GOOD_PAYMENT = PayerChannel(PARAMS, PAYER_KEY).pay(5_000).serialize()


def mutations() -> st.SearchStrategy[bytes]:
    """Valid bytes with a few bytes changed, inserted or cut."""

    @st.composite
    def mutate(draw: st.DrawFn, base: bytes) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "insert", "cut"]))
            i = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "flip" and data:
                data[i] = draw(st.integers(0, 255))
            elif kind == "insert":
                data[i:i] = draw(st.binary(min_size=1, max_size=3))
            elif data:
                del data[i : i + draw(st.integers(1, 8))]
        return bytes(data)

    return st.one_of(st.binary(max_size=300), mutate(VALID_TX), mutate(GOOD_PAYMENT))


@settings(max_examples=300, deadline=None)
@given(mutations())
def test_transaction_parse_raises_only_decode_error(data: bytes) -> None:
    try:
        tx = Transaction.parse(data)
    except DecodeError:
        return
    assert tx.serialize() == data  # anything accepted is canonical


@settings(max_examples=200, deadline=None)
@given(mutations())
def test_payment_parse_and_accept_raise_only_payment_errors(data: bytes) -> None:
    payee = PayeeChannel(PARAMS, PAYEE_KEY)
    try:
        payment = SignedCommitment.parse(data)
        payee.accept(payment, 0)
    except PaymentError:
        return
    assert data == GOOD_PAYMENT or payee.total > 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=140))
def test_channel_params_parse_raises_only_params_error(data: bytes) -> None:
    try:
        ChannelParams.parse(data)
    except ChannelParamsError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100))
def test_address_decode_raises_only_address_error(text: str) -> None:
    try:
        decode_address(text, "main")
    except AddressError:
        pass


def test_malformed_payment_is_a_payment_error_and_decode_error() -> None:
    assert issubclass(MalformedPaymentError, PaymentError) and issubclass(MalformedPaymentError, DecodeError)
