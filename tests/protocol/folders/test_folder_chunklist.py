"""Chunk lists and the version-2 record value (specs/folders.md §7 Record value, §7.1 Chunk list)."""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from protocol.chunks import Link
from protocol.folders import (
    LISTED_VALUE_SIZE,
    RECORD_VALUE_SIZE,
    ChunkList,
    FolderFormatError,
    WriteCap,
    chunk_list_secret,
    decode_record_value,
    encode_record_value,
    record_chunk_list,
    record_root,
)
from protocol.kademlia import MAX_MUTABLE_VALUE

CAP = WriteCap(bytes(range(32)))
SNAPSHOT = Link(hashlib.sha256(b"record").digest(), hashlib.sha256(b"record key").digest())
LIST = Link(hashlib.sha256(b"list").digest(), hashlib.sha256(b"list key").digest())
ADDRESSES = [hashlib.sha256(b"%d" % i).digest() for i in range(50)]


def _list(**changes: object) -> ChunkList:
    fields: dict[str, object] = {"number": 3, "time_ns": 1_700_000_000 * 10**9, "previous": LIST,
                                 "record": SNAPSHOT.root, "addresses": tuple(sorted(ADDRESSES))}
    fields.update(changes)
    return ChunkList(**fields)  # type: ignore[arg-type]


def test_a_list_round_trips_sorted_and_deduplicated() -> None:
    made = ChunkList.of(number=3, time_ns=5, previous=None, record=SNAPSHOT.root, addresses=ADDRESSES + ADDRESSES[:3])
    assert made.addresses == tuple(sorted(ADDRESSES))
    assert ChunkList.decode(made.encode()) == made
    chained = _list()
    data = chained.encode()
    assert ChunkList.decode(data) == chained
    assert len(data) < 32 * len(ADDRESSES) + 150  # 32 bytes an address and a small header


@pytest.mark.parametrize("mangle", [
    lambda d: d + b"\x00",  # trailing bytes
    lambda d: msgpack.packb([2] + msgpack.unpackb(d)[1:], use_bin_type=True),  # unknown version
    lambda d: msgpack.packb(msgpack.unpackb(d)[:5], use_bin_type=True),  # a field missing
    lambda d: msgpack.packb(msgpack.unpackb(d)[:5] + [msgpack.unpackb(d)[5][:-1]], use_bin_type=True),  # 31-byte tail
    lambda d: msgpack.packb(msgpack.unpackb(d)[:5] + [ADDRESSES[1] + ADDRESSES[0]], use_bin_type=True),  # unsorted
    lambda d: msgpack.packb(msgpack.unpackb(d)[:5] + [ADDRESSES[0] * 2], use_bin_type=True),  # repeated
    lambda d: msgpack.packb([1, 0] + msgpack.unpackb(d)[2:], use_bin_type=True),  # number 0
    lambda d: msgpack.packb(msgpack.unpackb(d)[:4] + [b"short"] + msgpack.unpackb(d)[5:], use_bin_type=True),
    lambda d: d[:-1],  # truncated
], ids=["trailing", "version", "missing", "ragged", "unsorted", "repeated", "number", "record", "truncated"])
def test_a_malformed_list_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FolderFormatError):
        ChunkList.decode(mangle(_list().encode()))


def test_a_non_canonical_list_is_refused() -> None:
    data = _list().encode()
    assert data[2] == 0x03  # the number as a positive fixint; the same as uint16 is not canonical
    with pytest.raises(FolderFormatError, match="canonical"):
        ChunkList.decode(data[:2] + b"\xcd\x00\x03" + data[3:])


def test_the_version_2_value_names_the_list_for_the_public_key_and_the_snapshot_for_the_read_key() -> None:
    value = encode_record_value(CAP.read_key, SNAPSHOT, public_key=CAP.public_key, chunk_list=LIST)
    assert len(value) == LISTED_VALUE_SIZE == 129 <= MAX_MUTABLE_VALUE and value[0] == 2
    assert record_root(value) == SNAPSHOT.root
    assert decode_record_value(CAP.read_key, value) == SNAPSHOT
    assert value[1:RECORD_VALUE_SIZE] == encode_record_value(CAP.read_key, SNAPSHOT)[1:]  # the v1 part is as before
    assert record_chunk_list(CAP.public_key, value) == LIST
    assert record_chunk_list(bytes(32), value).key != LIST.key  # type: ignore[union-attr]
    assert LIST.key not in value and SNAPSHOT.key not in value  # type: ignore[operator]
    assert record_chunk_list(CAP.public_key, encode_record_value(CAP.read_key, SNAPSHOT)) is None  # v1: no list


def test_values_of_the_wrong_length_for_their_version_are_refused() -> None:
    v1 = encode_record_value(CAP.read_key, SNAPSHOT)
    v2 = encode_record_value(CAP.read_key, SNAPSHOT, public_key=CAP.public_key, chunk_list=LIST)
    for bad in (b"\x02" + v1[1:], b"\x01" + v2[1:], v2[:-1], b"\x03" + v2[1:]):
        with pytest.raises(FolderFormatError):
            record_root(bad)
        with pytest.raises(FolderFormatError):
            record_chunk_list(CAP.public_key, bad)


def test_the_list_secret_is_the_public_keys_and_apart_from_the_folders_chunk_secret() -> None:
    assert chunk_list_secret(CAP.public_key) != CAP.chunk_secret
    assert chunk_list_secret(CAP.public_key) == chunk_list_secret(CAP.verify_cap.public_key)
    assert chunk_list_secret(WriteCap(bytes(32)).public_key) != chunk_list_secret(CAP.public_key)
