"""Frozen test vectors (tests/vectors/chunks.json, specs/chunks.md §12): the format must not drift.

The vectors come from scripts/vectors_chunks.py, a second implementation of
the spec that shares no code with protocol.chunks.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

from pyfastcdc.py.constants import GEAR

from protocol.chunks import (
    CdcFileEncoder,
    ChunkSealer,
    ConvergentKeyHasher,
    FileDecoder,
    FileEncoder,
    Link,
    RawWalker,
    max_fanout,
)
from protocol.chunks._cdc import cut_lengths
from protocol.chunks._crypto import KIND_DATA, KIND_ROOT
from protocol.chunks._keys3 import PositionalKeys

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "vectors" / "chunks.json").read_text())


def test_derivation_vector() -> None:
    key, nonce = ChunkSealer(bytes.fromhex(VECTORS["file_key"])).derive(KIND_DATA, 0, 0)
    assert key.hex() == VECTORS["data_chunk_0"]["key"]
    assert nonce.hex() == VECTORS["data_chunk_0"]["nonce"]


def test_file_vector_encodes_and_decodes() -> None:
    v = VECTORS["file"]
    enc = FileEncoder(bytes.fromhex(VECTORS["file_key"]), chunk_size=v["chunk_size"], name=v["name"], media_type=v["media_type"])
    chunks = enc.feed(v["plaintext_utf8"].encode()) + enc.finish()
    assert [[a.hex(), bytes(c).hex()] for a, c in chunks] == v["chunks"]
    assert str(enc.link) == v["link"]
    root_chunk = bytes.fromhex(v["chunks"][-1][1])
    sealer = ChunkSealer(bytes.fromhex(VECTORS["file_key"]))
    prefix = 8 + 32  # header + one data-chunk address (§6.1)
    private = sealer.open(root_chunk[prefix:], KIND_ROOT, 0, 0, enc.root, aad=root_chunk[:prefix])
    assert private.hex() == v["root_private"]
    dec = FileDecoder.from_link(Link.parse(v["link"]))
    stored = {bytes.fromhex(a): bytes.fromhex(c) for a, c in v["chunks"]}
    out = b""
    while (address := dec.next_address()) is not None:
        out += dec.feed(stored[address])
    assert out.decode() == v["plaintext_utf8"]


def test_convergent_vector() -> None:
    v = VECTORS["file"]
    hasher = ConvergentKeyHasher(bytes.fromhex(VECTORS["convergent"]["secret"]), chunk_size=v["chunk_size"],
                                 fanout=max_fanout(v["chunk_size"]), name=v["name"], media_type=v["media_type"])
    hasher.update(v["plaintext_utf8"].encode())
    assert hasher.file_key().hex() == VECTORS["convergent"]["file_key"]


def _tree_plaintext(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def test_tree_vector_encodes_decodes_and_walks_without_the_key() -> None:
    v = VECTORS["tree"]
    key = bytes.fromhex(VECTORS["file_key"])
    plain = _tree_plaintext(v["size"])
    enc = FileEncoder(key, chunk_size=v["chunk_size"], fanout=v["fanout"])
    chunks = enc.feed(plain) + enc.finish()
    assert enc.root.hex() == v["root"]
    assert sorted(a.hex() for a, _ in chunks) == sorted(v["walk_order"])
    stored = {a: bytes(c) for a, c in chunks}
    for address, chunk in v["manifest_chunks"].items():
        assert stored[bytes.fromhex(address)].hex() == chunk
    walker = RawWalker(bytes.fromhex(v["root"]))
    walked = []
    while (address := walker.next_address()) is not None:
        walker.feed(stored[address])
        walked.append(address)
    assert [a.hex() for a in walked] == v["walk_order"]
    assert (walker.depth, walker.data_chunks, walker.manifest_chunks) == (2, 5, 6)
    dec = FileDecoder(enc.root, key)
    out = b"".join(bytes(dec.feed(stored[a])) for a in walked)
    assert out == plain


# -- format 3 (specs/chunks.md §5.2, §6.6): cuts, positional file, convergent tree

V3 = VECTORS["v3"]


def _counter_stream(size: int) -> bytes:
    # §12: SHA-256("mu:cdc-vector" || 64-bit counter), concatenated.
    blocks = (hashlib.sha256(b"mu:cdc-vector" + struct.pack(">Q", i)).digest() for i in range(-(-size // 32)))
    return b"".join(blocks)[:size]


def test_v3_cut_vectors() -> None:
    v = V3["cut"]
    assert cut_lengths(_counter_stream(v["random_size"])) == v["random_lengths"]
    assert cut_lengths(bytes(v["zeros_size"])) == v["zeros_lengths"]


def test_v3_gear_table_in_the_spec_is_the_chunkers() -> None:
    spec = (Path(__file__).resolve().parents[3] / "specs" / "chunks.md").read_text().split("## A. Gear table")[1]
    rows = re.findall(r"^\s*\d+: (.*)$", spec, re.M)
    assert [int(h, 16) for row in rows for h in row.split()] == list(GEAR)


def test_v3_file_vector_encodes_and_decodes() -> None:
    v = V3["file"]
    key = bytes.fromhex(v["link_key"])
    assert PositionalKeys(key).key(KIND_ROOT, 0, 0).hex() == v["root_key"]
    enc = CdcFileEncoder(key, name=v["name"], media_type=v["media_type"])
    chunks = enc.feed(v["plaintext_utf8"].encode()) + enc.finish()
    assert [[a.hex(), bytes(c).hex()] for a, c in chunks] == v["chunks"]
    assert str(enc.link) == v["link"]
    dec = FileDecoder.from_link(Link.parse(v["link"]))
    stored = {bytes.fromhex(a): bytes.fromhex(c) for a, c in v["chunks"]}
    out = b""
    while (address := dec.next_address()) is not None:
        out += dec.feed(stored[address])
    assert out.decode() == v["plaintext_utf8"]


def test_v3_convergent_tree_vector() -> None:
    v = V3["convergent_tree"]
    plain = _counter_stream(V3["cut"]["random_size"])
    enc = CdcFileEncoder(chunk_secret=bytes.fromhex(v["chunk_secret"]), fanout=v["fanout"])
    chunks = enc.feed(plain) + enc.finish()
    assert enc.root.hex() == v["root"] and str(enc.link) == v["link"]
    stored = {a: bytes(c) for a, c in chunks}
    for address, chunk in v["manifest_chunks"].items():
        assert stored[bytes.fromhex(address)].hex() == chunk
    walker = RawWalker(enc.root)
    walked = []
    while (address := walker.next_address()) is not None:
        walker.feed(stored[address])
        walked.append(address)
    assert [a.hex() for a in walked] == v["walk_order"]
    dec = FileDecoder.from_link(enc.link)
    assert b"".join(bytes(dec.feed(stored[a])) for a in walked) == plain
