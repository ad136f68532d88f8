"""Links, manifest encoding rules and key derivation (specs/chunks.md §4, §6, §7)."""

from __future__ import annotations

import os
import struct

import base58
import msgpack
import pytest
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from protocol.chunks import (
    ChunkSealer,
    IntegrityError,
    Link,
    LinkError,
    LocalChunkError,
    RootRecord,
    chunk_address,
    parse_key,
)
from protocol.chunks._crypto import CHUNK_KEY_LABEL, CHUNK_NONCE_LABEL, EXTRACT_SALT, KIND_INDEX
from protocol.chunks._manifest import parse_index, serialize_index
from tests.helpers.chunks import CS

ROOT = bytes(range(32))
KEY = bytes(range(100, 132))


def test_link_round_trip_and_forms() -> None:
    link = Link(ROOT, KEY)
    text = str(link)
    assert text.startswith("mu:") and "#" in text
    assert Link.parse(text) == link
    assert Link.parse(f"  {text}\n") == link
    bare = base58.b58encode(ROOT).decode()
    assert Link.parse(bare) == Link(ROOT)
    assert Link.parse("mu:" + bare) == Link(ROOT)
    assert str(link.verify_cap) == "mu:" + bare
    assert link.root_text == bare


def test_key_alone_and_repr_hides_key() -> None:
    assert parse_key(" " + base58.b58encode(KEY).decode() + "\n") == KEY
    with pytest.raises(LinkError):
        parse_key("abc")
    assert base58.b58encode(KEY).decode() not in repr(Link(ROOT, KEY))
    assert KEY.hex() not in repr(Link(ROOT, KEY)) and str(KEY) not in repr(Link(ROOT, KEY))


def test_link_leading_zero_bytes_survive() -> None:
    root = b"\x00\x00" + ROOT[2:]
    assert Link.parse(str(Link(root, KEY))).root == root


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "root is empty"),
        ("mu:", "root is empty"),
        ("http://x", "must start with 'mu:'"),
        ("mu:0abc", "not base58"),
        ("mu:" + base58.b58encode(ROOT[:31]).decode(), "32 bytes, got 31"),
        (str(Link(ROOT)) + "#", "key is empty"),
        (str(Link(ROOT)) + "#Il0O", "key is not base58"),
        (str(Link(ROOT)) + "#" + base58.b58encode(KEY + b"x").decode(), "key must decode to 32 bytes, got 33"),
        ("mu:" + "2" * 200, "longer than"),
    ],
)
def test_malformed_links_name_the_problem(text: str, needle: str) -> None:
    with pytest.raises(LinkError) as info:
        Link.parse(text)
    assert needle in str(info.value)


def test_hkdf_matches_an_independent_rfc5869_implementation() -> None:
    file_key = os.urandom(32)
    sealer = ChunkSealer(file_key)
    context = struct.pack(">BBQ", KIND_INDEX, 3, 1234567)
    key, nonce = sealer.derive(KIND_INDEX, 3, 1234567)
    assert key == HKDF(file_key, 32, EXTRACT_SALT, SHA256, context=CHUNK_KEY_LABEL + context)
    assert nonce == HKDF(file_key, 12, EXTRACT_SALT, SHA256, context=CHUNK_NONCE_LABEL + context)
    assert sealer.derive(KIND_INDEX, 3, 1234568) != (key, nonce)


def test_chunk_address_is_sha256() -> None:
    assert chunk_address(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _root(**kw: object) -> bytes:
    fields = {"v": 1, "size": 5, "chunk_size": CS, "depth": 0, "a": b"\x01" * 32}
    fields.update(kw)
    return msgpack.packb(fields, use_bin_type=True)


def test_root_record_parses_only_canonical_valid_maps() -> None:
    good = _root()
    assert RootRecord.parse(good, address=ROOT).size == 5
    bad_inputs = [
        good + b"\x00",  # trailing bytes
        _root(v=2),  # unknown version
        _root(extra=1),  # unknown field
        _root(size=-1),
        _root(chunk_size=1000),
        _root(a=b"\x01" * 31),
        _root(depth=99),
        _root(size=True),
        msgpack.packb([1, 2, 3]),
        b"\xc1",
        msgpack.packb({"size": 5, "v": 1, "chunk_size": CS, "depth": 0, "a": b"\x01" * 32}),  # key order
    ]
    for data in bad_inputs:
        with pytest.raises(IntegrityError) as info:
            RootRecord.parse(data, address=ROOT)
        assert ROOT.hex() in str(info.value)


def test_index_node_rules() -> None:
    children = os.urandom(64)
    data = serialize_index(2, children)
    assert parse_index(data, level=2, chunk_size=CS, address=ROOT) == children
    for bad, level in [(data, 1), (serialize_index(2, b""), 2), (serialize_index(2, children[:-1]), 2), (data + b"\x00", 2)]:
        with pytest.raises(IntegrityError):
            parse_index(bad, level=level, chunk_size=CS, address=ROOT)


def test_root_record_validates_on_construction() -> None:
    with pytest.raises(LocalChunkError):
        RootRecord(size=1, chunk_size=CS, depth=0, children=b"x" * 33)
