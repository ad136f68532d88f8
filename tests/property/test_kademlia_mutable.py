"""Hypothesis: a mutable record verifies only as signed (specs/dht.md §7.3 Mutable record).

Any change to any field, and any single flipped bit of the encoding, makes
verification or parsing fail; parsing arbitrary bytes only ever raises
``RemoteProtocolError``.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.kademlia.mutable import MAX_MUTABLE_VALUE, SEQ_LIMIT, MutableRecord, sign_mutable
from protocol.kademlia.wire import RemoteProtocolError

seeds = st.binary(min_size=32, max_size=32)
seqs = st.integers(0, SEQ_LIMIT - 1)
values = st.binary(max_size=MAX_MUTABLE_VALUE)
records = st.builds(sign_mutable, seeds, seqs, values)


def parses(data: bytes) -> bool:
    try:
        MutableRecord.parse(data)
    except RemoteProtocolError:
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(records)
def test_round_trip(record: MutableRecord) -> None:
    assert record.verify()
    assert MutableRecord.parse(record.serialize()) == record


@settings(max_examples=100, deadline=None)
@given(records, st.sampled_from(["public_key", "seq", "value", "signature"]), st.data())
def test_any_changed_field_fails_verification(record: MutableRecord, name: str, data: st.DataObject) -> None:
    old = getattr(record, name)
    if name == "seq":
        new: object = data.draw(seqs.filter(lambda s: s != old))
    elif name == "value":
        new = data.draw(values.filter(lambda v: v != old))
    else:
        i = data.draw(st.integers(0, len(old) - 1))
        bit = 1 << data.draw(st.integers(0, 7))
        new = old[:i] + bytes([old[i] ^ bit]) + old[i + 1:]
    changed = dataclasses.replace(record, **{name: new})
    assert not changed.verify()
    assert not parses(changed.serialize())


@settings(max_examples=100, deadline=None)
@given(records, st.data())
def test_any_flipped_bit_of_the_encoding_is_refused(record: MutableRecord, data: st.DataObject) -> None:
    encoded = record.serialize()
    i = data.draw(st.integers(0, len(encoded) - 1))
    bit = 1 << data.draw(st.integers(0, 7))
    assert not parses(encoded[:i] + bytes([encoded[i] ^ bit]) + encoded[i + 1:])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1300))
def test_arbitrary_bytes_only_raise_protocol_errors(blob: bytes) -> None:
    parses(blob)
