"""Channel message bodies and the payment field: round trips and refusals."""

from __future__ import annotations

import pytest

from protocol.payments import REDELIVERY_DEPTH, LocalPaymentError, PaymentErrorCode, next_total
from protocol.payments.messages import ChannelId, ChannelState, OpenChannel, Payment, channel_request

CID = ChannelId(bytes(range(32)), 7)


def test_channel_id_forms() -> None:
    assert len(CID.to_bytes()) == 36 and CID.to_bytes()[-4:] == b"\x00\x00\x00\x07"
    assert ChannelId.from_bytes(CID.to_bytes()) == CID
    assert str(CID) == bytes(range(32))[::-1].hex() + ":7"  # display order, like bitcoind
    assert ChannelId.parse(str(CID)) == CID
    for bad in ("nope", "00:1", "ab" * 32 + ":x"):
        with pytest.raises(ValueError):
            ChannelId.parse(bad)


def test_round_trips() -> None:
    payment = Payment(channel=CID, total=1234, sig=b"\x30" * 71 + b"\x01")
    assert Payment.from_wire(payment.to_wire()) == payment
    opening = OpenChannel(channel=CID, capacity=50_000, expiry=300, payer_pubkey=b"\x02" + bytes(32))
    assert OpenChannel.from_wire(opening.to_wire()) == opening
    state = ChannelState(channel=CID, total=5, consumed=9, paid=5, last_chunk=bytes(32), last_kind="get",
                         recent=((b"\x01" * 32, "put"), (bytes(32), "get")), sig=b"\x30" * 71 + b"\x01")
    assert ChannelState.from_wire(state.to_wire()) == state
    assert channel_request({"channel": CID.to_bytes()}) == CID


@pytest.mark.parametrize(
    "wire",
    [
        None,
        {"channel": CID.to_bytes(), "total": 1},
        {"channel": CID.to_bytes()[:35], "total": 1, "sig": b"s"},
        {"channel": CID.to_bytes(), "total": -1, "sig": b"s"},
        {"channel": CID.to_bytes(), "total": True, "sig": b"s"},
        {"channel": CID.to_bytes(), "total": 1, "sig": b""},
        {"channel": CID.to_bytes(), "total": 1, "sig": b"s" * 74},
        {"channel": CID.to_bytes(), "total": 1, "sig": "text"},
        {"channel": CID.to_bytes(), "total": 1, "sig": b"s", "x": 1},
    ],
)
def test_malformed_payments_are_refused(wire: object) -> None:
    with pytest.raises(LocalPaymentError) as info:
        Payment.from_wire(wire)
    assert info.value.code == PaymentErrorCode.BAD_PAYMENT


def test_malformed_open_and_state_are_refused() -> None:
    good = OpenChannel(channel=CID, capacity=1, expiry=1, payer_pubkey=b"\x03" + bytes(32)).to_wire()
    for change in ({"payer_pubkey": b"\x04" + bytes(32)}, {"expiry": 500_000_000}, {"vout": 2**32}):
        with pytest.raises(LocalPaymentError):
            OpenChannel.from_wire({**good, **change})
    state = ChannelState(channel=CID, total=0, consumed=0, paid=0, last_chunk=None, last_kind=None).to_wire()
    too_many = [[bytes(32), "get"]] * (REDELIVERY_DEPTH + 1)
    for change in ({"last_kind": "steal"}, {"last_chunk": b"x"}, {"recent": too_many}, {"recent": [[b"x", "get"]]},
                   {"recent": [[bytes(32), "steal"]]}, {"recent": [bytes(32)]}, {"recent": None},
                   {"sig": b"s"}, {"total": 5}, {"total": 5, "sig": b"s" * 74}, {"total": 5, "sig": "text"}):
        with pytest.raises(LocalPaymentError):
            ChannelState.from_wire({**state, **change})
    for key in ("recent", "sig"):  # r2 lacks recent, r3 lacks sig
        missing = dict(state)
        del missing[key]
        with pytest.raises(LocalPaymentError):
            ChannelState.from_wire(missing)


def test_next_total_resends_unacknowledged_and_never_goes_below() -> None:
    assert next_total(owed=0, acknowledged_total=10, signed_total=10) is None
    assert next_total(owed=5, acknowledged_total=10, signed_total=10) == 15
    # signed 15, payee never recorded it (ack 10): the same total goes again
    assert next_total(owed=5, acknowledged_total=10, signed_total=15) == 15
    # payee reports more than we remember (our ledger was lost): build on its total
    assert next_total(owed=5, acknowledged_total=20, signed_total=15) == 25
    with pytest.raises(ValueError):
        next_total(owed=-1, acknowledged_total=0, signed_total=0)
