"""Paid audits' and renewals' pure parts (specs/erasure.md §7.4 Paid audits, §9 Renewal): the charged AUDIT
and the renewal PUT on the wire, their prices, the payee's decision for a charged audit, and the kinds in
CHANNEL_STATE's `recent`."""

from __future__ import annotations

import msgpack
import pytest

from protocol.payments import Kind, PeerAccount, Terms
from protocol.payments.errors import LocalPaymentError
from protocol.payments.messages import ChannelId, ChannelState
from protocol.payments.payee import (ChargeRequest, LookUpChannel, Redeliver, Refuse, decide_charge,
                                     price_of)
from protocol.wire import MAX_AUDIT_LENGTH, Audit, LocalProtocolError, PutChunk, RemoteProtocolError
from protocol.wire._messages import decode_message, encode_meta

TERMS = Terms(price_per_mib_get=100, price_per_mib_put=300, retention_seconds=86_400, free_allowance=0,
              min_capacity=20_000, expiry_window=144, min_confirmations=1, fee_rate=2,
              payment_pubkey=bytes([2]) + bytes(32), identity_key=bytes(32))
ADDRESS, NONCE = bytes(range(32)), bytes(range(32, 64))


def roundtrip(message: Audit) -> Audit:
    mtype, meta, data = encode_meta(message)
    decoded = decode_message(int(mtype), False, message.request_id, msgpack.unpackb(msgpack.packb(meta)), data)
    assert isinstance(decoded, Audit)
    return decoded


def test_a_probe_reads_as_an_r1_audit_and_a_charged_audit_carries_its_payment() -> None:
    probe = Audit(request_id=3, address=ADDRESS, nonce=NONCE, offset=5, length=100)
    assert set(encode_meta(probe)[1]) == {"address", "nonce", "offset", "length"}  # unchanged from r1
    assert roundtrip(probe) == probe and not roundtrip(probe).charge
    payment = {"channel": bytes(36), "total": 7, "sig": b"\x30" * 70}
    charged = Audit(request_id=4, address=ADDRESS, nonce=NONCE, offset=5, length=100, charge=True, payment=payment)
    assert encode_meta(charged)[1]["charge"] is True
    back = roundtrip(charged)
    assert back.charge and back.payment == payment


def test_a_payment_without_charge_and_a_false_charge_on_the_wire_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Audit(request_id=1, address=ADDRESS, nonce=NONCE, offset=0, length=1, payment={"total": 1})
    meta = {"address": ADDRESS, "nonce": NONCE, "offset": 0, "length": 1, "charge": False}
    with pytest.raises(RemoteProtocolError):
        decode_message(0x16, False, 1, meta, b"")
    with pytest.raises(RemoteProtocolError):
        decode_message(0x16, False, 1, dict(meta, charge=True, extra=1), b"")


def test_a_renewal_put_carries_its_id_and_is_priced_as_a_put() -> None:
    plain = PutChunk(request_id=1, address=ADDRESS, data=b"x" * 10)
    assert "renewal" not in encode_meta(plain)[1]
    renewal = PutChunk(request_id=2, address=ADDRESS, data=b"x" * 10, renewal=NONCE)
    mtype, meta, data = encode_meta(renewal)
    back = decode_message(int(mtype), False, 2, msgpack.unpackb(msgpack.packb(meta)), data)
    assert isinstance(back, PutChunk) and back.renewal == NONCE
    with pytest.raises(RemoteProtocolError):
        decode_message(int(mtype), False, 2, dict(meta, renewal=b"short"), data)
    assert price_of(TERMS, Kind.RENEW, MAX_AUDIT_LENGTH) == TERMS.put_price(MAX_AUDIT_LENGTH)


def test_an_audit_is_priced_as_a_get_of_its_range() -> None:
    assert price_of(TERMS, Kind.AUDIT, MAX_AUDIT_LENGTH) == TERMS.get_price(MAX_AUDIT_LENGTH) == 7
    assert price_of(TERMS, Kind.AUDIT, 1) == 1  # a non-empty range at a non-zero price costs a sat
    assert price_of(TERMS, Kind.PUT, MAX_AUDIT_LENGTH) == TERMS.put_price(MAX_AUDIT_LENGTH)


def test_a_charged_audit_without_allowance_owes_its_price_and_a_retry_of_the_same_nonce_is_free() -> None:
    request = ChargeRequest(kind=Kind.AUDIT, chunk=NONCE, size=MAX_AUDIT_LENGTH, payment=None)
    refused = decide_charge(request, terms=TERMS, account=PeerAccount())
    assert isinstance(refused, Refuse) and refused.owed == 7
    with_payment = ChargeRequest(kind=Kind.AUDIT, chunk=NONCE, size=MAX_AUDIT_LENGTH,
                                 payment={"channel": bytes(36), "total": 7, "sig": b"\x30" * 70})
    assert isinstance(decide_charge(with_payment, terms=TERMS, account=PeerAccount()), LookUpChannel)
    # Charged once (the record is on disk, the answer lost): the same audit again is redelivered, not charged.
    account = PeerAccount().charge(chunk=NONCE, kind=Kind.AUDIT, price=7, increment=7, allowance=0)
    again = decide_charge(request, terms=TERMS, account=account)
    assert isinstance(again, Redeliver)
    # A GET of a chunk whose address happens to equal the nonce is another charge (kinds differ).
    get = ChargeRequest(kind=Kind.GET, chunk=NONCE, size=MAX_AUDIT_LENGTH, payment=None)
    assert isinstance(decide_charge(get, terms=TERMS, account=account), Refuse)


def test_channel_state_carries_audit_charges_and_refuses_unknown_kinds() -> None:
    state = ChannelState(channel=ChannelId(bytes(32), 0), total=7, consumed=7, paid=7, last_chunk=NONCE,
                         last_kind="audit", recent=((ADDRESS, "put"), (NONCE, "audit")), sig=b"\x30" * 70 + b"\x01")
    assert ChannelState.from_wire(state.to_wire()) == state
    wire = state.to_wire()
    with pytest.raises(LocalPaymentError):
        ChannelState.from_wire(dict(wire, last_kind="probe"))
    with pytest.raises(LocalPaymentError):
        ChannelState.from_wire(dict(wire, recent=[[NONCE, "probe"]]))
