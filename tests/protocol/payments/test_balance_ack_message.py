"""BALANCE_ACK on the wire (specs/wire.md §6, 0x25; specs/payments.md §Service balance): fields and limits."""

from __future__ import annotations

import pytest

from protocol.identity import Identity
from protocol.payments.balance import BalanceAck, BalanceError, BalanceErrorCode
from protocol.wire import ChannelMessage, MessageType
from tests.protocol.wire.test_connection import drain, established_pair

ALICE, BOB = Identity(b"\x0a" * 32), Identity(b"\x0b" * 32)
ACK = BalanceAck.sign(ALICE, peer=BOB.node_id, service_received=1_234, payment_received=56)
PAYMENT = {"channel": b"\x01" * 36, "total": 700, "sig": b"\x02" * 71}


@pytest.mark.parametrize("payment", [None, PAYMENT])
def test_a_balance_ack_crosses_the_wire_one_way(payment: object) -> None:
    message = ChannelMessage(request_id=0, type=MessageType.BALANCE_ACK, fields=ACK.to_wire(payment))
    init, resp = established_pair()
    resp.receive_data(bytes(init.send(message)))
    [received] = drain(resp)
    assert isinstance(received, ChannelMessage) and not received.response and received.request_id == 0
    ack, carried = BalanceAck.from_wire(received.fields)
    assert ack == ACK and ack.verify(ALICE.public_key) and carried == payment
    assert set(received.fields) == ({"ack"} if payment is None else {"ack", "payment"})


@pytest.mark.parametrize("fields", [
    {}, {"ack": ACK.serialize()[:-1]}, {"ack": ACK.serialize(), "payment": None},
    {"ack": ACK.serialize(), "extra": 1}, {"payment": PAYMENT}, "ack",
])
def test_malformed_balance_acks_are_refused(fields: object) -> None:
    with pytest.raises(BalanceError) as caught:
        BalanceAck.from_wire(fields)
    assert caught.value.code == BalanceErrorCode.BAD_BALANCE_ACK
