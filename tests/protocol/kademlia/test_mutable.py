"""Mutable records and their store, without sockets (specs/dht.md §7.3 Mutable record)."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from protocol.identity import Identity
from protocol.kademlia.mutable import (
    MAX_MUTABLE_VALUE,
    MUTABLE_VERSION,
    MutableRecord,
    MutableStore,
    check_update,
    mutable_key,
    sign_mutable,
    signed_bytes,
)
from protocol.kademlia.wire import ErrorCode, RemoteProtocolError, pack

VECTOR = json.loads((Path(__file__).parents[2] / "vectors" / "dht_mutable.json").read_text())
SEED = bytes(range(32))


def refused(data: object) -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as exc:
        MutableRecord.parse(data)
    return exc.value.code


def test_vector() -> None:
    record = sign_mutable(bytes.fromhex(VECTOR["seed"]), VECTOR["seq"], bytes.fromhex(VECTOR["value"]))
    assert record.public_key.hex() == VECTOR["public_key"]
    assert mutable_key(record.public_key).hex() == record.key.hex() == VECTOR["key"]
    assert record.signed_bytes().hex() == VECTOR["signed_bytes"]
    assert record.signature.hex() == VECTOR["signature"]
    assert record.serialize().hex() == VECTOR["record"]
    assert MutableRecord.parse(bytes.fromhex(VECTOR["record"])) == record


def test_the_key_is_tagged_not_the_node_id() -> None:
    identity = Identity(SEED)
    assert mutable_key(identity.public_key) != identity.node_id
    assert len(mutable_key(identity.public_key)) == 20
    with pytest.raises(ValueError):
        mutable_key(b"short")


def test_sign_refuses_out_of_bounds_fields() -> None:
    assert sign_mutable(SEED, 0, b"x" * MAX_MUTABLE_VALUE).verify()
    for seq, value in ((-1, b""), (2**63, b""), (0, b"x" * (MAX_MUTABLE_VALUE + 1))):
        with pytest.raises(ValueError):
            sign_mutable(SEED, seq, value)
    with pytest.raises(ValueError):
        sign_mutable(b"short", 0, b"")


def test_parse_refuses_shapes_sizes_and_non_canonical_encodings() -> None:
    good = sign_mutable(SEED, 300, b"v")
    key, sig = good.public_key, good.signature
    assert refused(good.serialize() + b"\x00") is ErrorCode.MALFORMED  # trailing byte
    assert refused(pack([2, key, 300, b"v", sig])) is ErrorCode.MALFORMED  # unknown version
    assert refused(pack([MUTABLE_VERSION, key, 300, b"v"])) is ErrorCode.MALFORMED  # no signature
    assert refused(pack([MUTABLE_VERSION, key, True, b"v", sig])) is ErrorCode.MALFORMED
    assert refused(pack([MUTABLE_VERSION, key, -1, b"v", sig])) is ErrorCode.MALFORMED
    assert refused(pack([MUTABLE_VERSION, key, 300, "v", sig])) is ErrorCode.MALFORMED  # str, not bytes
    assert refused(pack([MUTABLE_VERSION, key[:31], 300, b"v", sig])) is ErrorCode.MALFORMED
    assert refused(pack([MUTABLE_VERSION, key, 300, b"v", sig[:63]])) is ErrorCode.MALFORMED
    # 300 as a uint32 instead of its shortest uint16 form.
    wide = b"\x95\x01" + msgpack.packb(key) + b"\xce\x00\x00\x01\x2c" + msgpack.packb(b"v") + msgpack.packb(sig)
    assert msgpack.unpackb(wide)[2] == 300
    assert refused(wide) is ErrorCode.MALFORMED
    assert refused(pack([MUTABLE_VERSION, key, 300, b"x" * 1001, sig])) is ErrorCode.TOO_LARGE
    assert refused(b"\x00" * 1201) is ErrorCode.TOO_LARGE
    assert refused("not bytes") is ErrorCode.TOO_LARGE
    assert refused(pack([MUTABLE_VERSION, key, 301, b"v", sig])) is ErrorCode.BAD_SIGNATURE
    # The signature covers the domain tag: one made over the bare array does not verify.
    bare = Identity(SEED).sign(pack([key, 300, b"v"]))
    assert refused(pack([MUTABLE_VERSION, key, 300, b"v", bare])) is ErrorCode.BAD_SIGNATURE
    assert signed_bytes(key, 300, b"v").startswith(b"mu:dht-mutable:v1\x00")


def test_check_update_rules() -> None:
    five, six = sign_mutable(SEED, 5, b"a"), sign_mutable(SEED, 6, b"b")
    assert check_update(None, five) and check_update(five, six)
    assert check_update(five, five) is False
    with pytest.raises(RemoteProtocolError) as exc:
        check_update(six, five)
    assert exc.value.code is ErrorCode.OLD_SEQUENCE
    with pytest.raises(RemoteProtocolError) as exc:
        check_update(five, sign_mutable(SEED, 5, b"other"))
    assert exc.value.code is ErrorCode.SEQUENCE_CONFLICT


def test_store_keeps_the_highest_sequence_for_its_lifetime() -> None:
    store = MutableStore(ttl=100.0)
    five, six = sign_mutable(SEED, 5, b"a"), sign_mutable(SEED, 6, b"b")
    assert store.put(five, "192.0.2.1", now=0.0) is True
    assert store.put(five, "192.0.2.9", now=50.0) is False  # the same record: lifetime restarts
    assert store.get(five.key, now=149.0) == five
    assert store.put(six, "192.0.2.1", now=60.0) is True
    with pytest.raises(RemoteProtocolError):
        store.put(five, "192.0.2.1", now=61.0)
    assert store.get(five.key, now=159.0) == six
    assert store.get(five.key, now=160.0) is None and len(store) == 0
    # Once expired, any sequence may start again.
    assert store.put(five, "192.0.2.1", now=161.0) is True


def test_store_bounds_per_peer_and_in_total() -> None:
    store = MutableStore(max_records=4, max_per_peer=2, ttl=100.0)
    seeds = [bytes([i]) * 32 for i in range(6)]
    store.put(sign_mutable(seeds[0], 0, b""), "a", 0.0)
    store.put(sign_mutable(seeds[1], 0, b""), "a", 0.0)
    with pytest.raises(RemoteProtocolError) as exc:
        store.put(sign_mutable(seeds[2], 0, b""), "a", 0.0)
    assert exc.value.code is ErrorCode.OVER_LIMIT
    # "a" updating its own record takes no further share; "b" taking it over counts for "b".
    store.put(sign_mutable(seeds[0], 1, b""), "a", 0.0)
    store.put(sign_mutable(seeds[0], 2, b""), "b", 0.0)
    store.put(sign_mutable(seeds[2], 0, b""), "a", 0.0)
    store.put(sign_mutable(seeds[3], 0, b""), "b", 0.0)
    with pytest.raises(RemoteProtocolError) as exc:
        store.put(sign_mutable(seeds[4], 0, b""), "c", 0.0)
    assert exc.value.code is ErrorCode.OVER_LIMIT and "full" in str(exc.value)
    # Expired records make room.
    assert store.put(sign_mutable(seeds[4], 0, b""), "c", 100.0) is True and len(store) == 1
