"""Provider and contact records, tokens, bounded stores, table file (specs/dht.md §7, §8, §10)."""

from __future__ import annotations

import pytest

from protocol.identity import Identity
from protocol.kademlia.ids import Contact
from protocol.kademlia.records import (
    MAX_PROVIDER_TTL,
    ContactInfo,
    ContactRecord,
    ProviderRecord,
    check_token,
    make_token,
)
from protocol.kademlia.storage import ProviderStore, ValueStore
from protocol.kademlia.table_file import TableFileError, decode_table, encode_table
from protocol.kademlia.wire import ErrorCode, RemoteProtocolError, pack

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
KEY = b"\x42" * 20
NOW = 1_700_000_000


def provider(ident: Identity = ALICE, expires_at: int = NOW + 600, key: bytes = KEY, **terms: object) -> ProviderRecord:
    return ProviderRecord.create(ident, key=key, host="192.0.2.7", tcp_port=4001, terms=terms, expires_at=expires_at)


def test_provider_record_round_trip_and_tamper() -> None:
    record = provider(price_sat_per_mib=5, currency="sat")
    parsed = ProviderRecord.parse(record.serialize(), now=NOW)
    assert parsed == record and parsed.node_id == ALICE.node_id
    assert list(parsed.terms) == ["currency", "price_sat_per_mib"]  # canonical order
    fields = [1, KEY, ALICE.public_key, "192.0.2.7", 4002, {"currency": "sat", "price_sat_per_mib": 5},
              NOW + 600, record.signature]
    with pytest.raises(RemoteProtocolError) as e:
        ProviderRecord.parse(pack(fields), now=NOW)
    assert e.value.code is ErrorCode.BAD_SIGNATURE
    fields[2] = BOB.public_key
    fields[4] = 4001
    with pytest.raises(RemoteProtocolError) as e:
        ProviderRecord.parse(pack(fields), now=NOW)
    assert e.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize("expires_at,code", [(NOW, ErrorCode.EXPIRED), (NOW + MAX_PROVIDER_TTL + 3600, ErrorCode.BAD_ARGUMENTS)])
def test_provider_record_lifetime(expires_at: int, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        ProviderRecord.parse(provider(expires_at=expires_at).serialize(), now=NOW)
    assert e.value.code is code


def test_provider_record_shape_limits() -> None:
    with pytest.raises(ValueError):
        provider(**{f"k{i}": i for i in range(17)})
    with pytest.raises(ValueError):
        provider(blob=b"x" * 600)
    with pytest.raises(ValueError):
        provider(bad=1.5)
    for data in (b"\x90", pack([2] + [0] * 7), b"x" * 2000, 12, pack([1, KEY, b"k", "h", 1, {}, NOW, b"s" * 64])):
        with pytest.raises(RemoteProtocolError):
            ProviderRecord.parse(data, now=NOW)


def test_contact_record() -> None:
    info = ContactInfo(tcp_port=4001, payment_pubkey=b"\x02" + b"\x33" * 32)
    record = ContactRecord.create(ALICE, host="192.0.2.7", udp_port=4000, info=info, issued_at=NOW)
    assert ContactRecord.parse(record.serialize()) == record and record.node_id == ALICE.node_id
    forged = ContactRecord(public_key=record.public_key, host="192.0.2.8", udp_port=4000, tcp_port=4001,
                           payment_pubkey=record.payment_pubkey, issued_at=NOW, signature=record.signature)
    with pytest.raises(RemoteProtocolError) as e:
        ContactRecord.parse(forged.serialize())
    assert e.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(ValueError):
        ContactRecord.create(ALICE, host="h", udp_port=1, info=ContactInfo(tcp_port=1, payment_pubkey=b"x"), issued_at=0)


def test_tokens_bind_ip_and_secret() -> None:
    old, cur = b"o" * 32, b"c" * 32
    token = make_token(old, "192.0.2.1")
    assert check_token(token, "192.0.2.1", [cur, old])
    assert not check_token(token, "192.0.2.2", [cur, old])
    assert not check_token(token, "192.0.2.1", [b"n" * 32, cur])
    assert not check_token(b"", "192.0.2.1", [old]) and not check_token(None, "192.0.2.1", [old])


def test_value_store_bounds() -> None:
    store = ValueStore(max_values=3, max_per_peer=2, ttl=10.0)
    store.put(b"a" * 20, 1, "10.0.0.1", 0.0)
    store.put(b"b" * 20, 2, "10.0.0.1", 0.0)
    with pytest.raises(RemoteProtocolError) as e:
        store.put(b"c" * 20, 3, "10.0.0.1", 0.0)
    assert e.value.code is ErrorCode.OVER_LIMIT
    store.put(b"a" * 20, 9, "10.0.0.1", 1.0)  # overwriting one's own value is fine
    store.put(b"c" * 20, 3, "10.0.0.2", 0.0)
    with pytest.raises(RemoteProtocolError):
        store.put(b"d" * 20, 4, "10.0.0.3", 0.0)  # full
    assert store.get(b"a" * 20, 5.0) == 9
    assert store.get(b"b" * 20, 10.0) is None  # expired
    store.put(b"d" * 20, 4, "10.0.0.3", 10.5)  # room again after expiry
    assert store.expire(100.0) == 3 and len(store) == 0


def test_provider_store_bounds() -> None:
    store = ProviderStore(max_keys=2, max_per_key=2, max_per_peer=2)
    a, b, c = Identity(b"a" * 32), Identity(b"b" * 32), Identity(b"c" * 32)
    store.add(provider(a, NOW + 100), "10.0.0.1", NOW)
    store.add(provider(b, NOW + 200), "10.0.0.1", NOW)
    store.add(provider(a, NOW + 50), "10.0.0.1", NOW)  # older copy: ignored
    assert [r.node_id for r in store.get(KEY, NOW)] == [b.node_id, a.node_id]
    store.add(provider(c, NOW + 300), "10.0.0.2", NOW)  # full key: replaces the soonest to expire
    assert {r.node_id for r in store.get(KEY, NOW)} == {b.node_id, c.node_id}
    with pytest.raises(RemoteProtocolError):
        store.add(provider(a, NOW + 150), "10.0.0.2", NOW)  # expires before everyone held
    store.add(provider(a, NOW + 100, key=b"\x01" * 20), "10.0.0.1", NOW)
    with pytest.raises(RemoteProtocolError):
        store.add(provider(a, NOW + 100, key=b"\x02" * 20), "10.0.0.3", NOW)  # key limit
    with pytest.raises(RemoteProtocolError):
        store.add(provider(c, NOW + 100, key=b"\x01" * 20), "10.0.0.1", NOW)  # per-peer limit
    assert store.get(KEY, NOW + 250) == [provider(c, NOW + 300)]
    assert store.expire(NOW + 1000) == 3 and len(store) == 0


def test_table_file_round_trip_and_refusals() -> None:
    own = ALICE.node_id
    contacts = [Contact(BOB.node_id, "192.0.2.1", 4000, BOB.public_key), Contact(b"\x05" * 20, "192.0.2.2", 4001)]
    data = encode_table(own, contacts)
    assert decode_table(data, own) == contacts
    # A key that does not hash to the ID is dropped, the contact kept as plain.
    tampered = data.replace(BOB.public_key.hex().encode(), ALICE.public_key.hex().encode())
    assert decode_table(tampered, own)[0].public_key == b""
    for bad in (b"\xff", b"[]", b'{"format": "mu-dht-table", "version": 2}', b"x" * (2 << 20)):
        with pytest.raises(TableFileError):
            decode_table(bad, own)
    with pytest.raises(TableFileError):
        decode_table(data, BOB.node_id)
    junk = data.replace(b'"port": 4001', b'"port": "x"')
    assert decode_table(junk, own) == contacts[:1]
