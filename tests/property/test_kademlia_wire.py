"""Properties of the datagram codec and records (specs/dht.md §4, §7)."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.identity import Identity
from protocol.kademlia.records import ContactRecord, ProviderRecord
from protocol.kademlia.wire import RemoteProtocolError, Request, decode_datagram, encode_request

ALICE = Identity(bytes([9]) * 32)
NOW = 1_700_000_000

scalars = st.one_of(st.integers(-2**63, 2**64 - 1), st.binary(max_size=40), st.text(max_size=20), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_only_raises_protocol_errors(data: bytes) -> None:
    for prefix in (b"", b"\x00" + b"m" * 20, b"\x01" + b"m" * 20):
        try:
            decode_datagram(prefix + data)
        except RemoteProtocolError:
            pass


@settings(max_examples=80, deadline=None)
@given(name=st.text(min_size=1, max_size=32), args=st.lists(scalars, max_size=6), msg_id=st.binary(min_size=20, max_size=20))
def test_request_round_trip(name: str, args: list[object], msg_id: bytes) -> None:
    assert decode_datagram(encode_request(msg_id, name, args)) == Request(msg_id, name, tuple(args))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(scalars, st.dictionaries(st.text(max_size=5), scalars, max_size=3)), min_size=8, max_size=8))
def test_record_parsers_only_raise_protocol_errors(fields: list[object]) -> None:
    data = msgpack.packb(fields, use_bin_type=True)
    for parse in (lambda d: ProviderRecord.parse(d, now=NOW), ContactRecord.parse):
        try:
            parse(data)
        except RemoteProtocolError:
            pass


@settings(max_examples=30, deadline=None)
@given(flip=st.integers(0, 10_000))
def test_any_flipped_byte_breaks_a_provider_record(flip: int) -> None:
    record = ProviderRecord.create(ALICE, key=b"k" * 20, host="192.0.2.1", tcp_port=4001,
                                   terms={"price": 3}, expires_at=NOW + 600)
    data = bytearray(record.serialize())
    data[flip % len(data)] ^= 0x01
    try:
        parsed = ProviderRecord.parse(bytes(data), now=NOW)
    except RemoteProtocolError:
        return
    # A flip that still parses must be one that changes no signed meaning.
    assert parsed == record
