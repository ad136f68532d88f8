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
from protocol.chunks._crypto import CHUNK_KEY_LABEL, CHUNK_NONCE_LABEL, EXTRACT_SALT, KIND_INDEX, KIND_ROOT
from protocol.chunks._manifest import HEADER, ManifestHeader, manifest_prefix, parse_header
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
    fields = {"v": 2, "size": 5, "chunk_size": CS}
    fields.update(kw)
    return msgpack.packb(fields, use_bin_type=True)


_ONE = ManifestHeader(KIND_ROOT, 0, b"\x01" * 32, HEADER.size + 32)


def test_root_record_parses_only_canonical_valid_maps() -> None:
    good = _root()
    assert RootRecord.parse(good, _ONE, address=ROOT).size == 5
    bad_inputs = [
        good + b"\x00",  # trailing bytes
        _root(v=1),  # unknown version
        _root(extra=1),  # unknown field
        _root(depth=0),  # depth lives in the cleartext header now
        _root(size=-1),
        _root(chunk_size=1000),
        _root(size=True),
        msgpack.packb([1, 2, 3]),
        b"\xc1",
        msgpack.packb({"size": 5, "v": 2, "chunk_size": CS}),  # key order
    ]
    for data in bad_inputs:
        with pytest.raises(IntegrityError) as info:
            RootRecord.parse(data, _ONE, address=ROOT)
        assert ROOT.hex() in str(info.value)
    too_deep = ManifestHeader(KIND_ROOT, 99, b"\x01" * 32, HEADER.size + 32)
    with pytest.raises(IntegrityError):
        RootRecord.parse(good, too_deep, address=ROOT)


def test_manifest_header_rules() -> None:
    children = os.urandom(64)
    tag = b"\x00" * 16
    data = manifest_prefix(KIND_INDEX, 2, children) + tag
    header = parse_header(data, kind=KIND_INDEX, level=2, address=ROOT)
    assert header.children == children and header.count == 2 and header.prefix_size == 8 + 64
    root = manifest_prefix(KIND_ROOT, 3, children) + os.urandom(40) + tag
    assert parse_header(root, kind=KIND_ROOT, address=ROOT).level == 3
    bad = [
        (data, KIND_INDEX, 1),  # wrong level for its place in the tree
        (data, KIND_ROOT, None),  # an index node where the root should be
        (manifest_prefix(KIND_INDEX, 2, b"") + tag, KIND_INDEX, 2),  # empty index node
        (data + b"\x00", KIND_INDEX, 2),  # index nodes carry no private bytes
        (data[:-1], KIND_INDEX, 2),
        (b"\x01" + data[1:], KIND_INDEX, 2),  # format version 1
        (data[:3] + b"\x01" + data[4:], KIND_INDEX, 2),  # reserved byte set
        (data[:4] + struct.pack(">I", 3) + data[8:], KIND_INDEX, 2),  # count beyond the bytes
        (manifest_prefix(KIND_ROOT, 1, b"") + tag, KIND_ROOT, None),  # depth 1 with no children
        (manifest_prefix(KIND_ROOT, 17, children) + tag, KIND_ROOT, None),  # deeper than MAX_DEPTH
        (manifest_prefix(KIND_ROOT, 0, children) + b"\x00" * 4000, KIND_ROOT, None),  # oversized private part
        (b"\x02\x02", KIND_ROOT, None),
    ]
    for chunk, kind, level in bad:
        with pytest.raises(IntegrityError) as info:
            parse_header(chunk, kind=kind, level=level, address=ROOT)
        assert ROOT.hex() in str(info.value)


def test_root_record_validates_on_construction() -> None:
    with pytest.raises(LocalChunkError):
        RootRecord(size=1, chunk_size=CS, depth=0, children=b"x" * 33)
