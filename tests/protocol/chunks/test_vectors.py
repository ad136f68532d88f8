"""Frozen test vectors (tests/vectors/chunks.json, specs/chunks.md §12): the format must not drift."""

from __future__ import annotations

import json
from pathlib import Path

from protocol.chunks import ChunkSealer, ConvergentKeyHasher, FileDecoder, FileEncoder, Link, max_fanout
from protocol.chunks._crypto import KIND_DATA, KIND_ROOT

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
    assert sealer.open(root_chunk, KIND_ROOT, 0, 0, enc.root).hex() == v["root_plaintext"]
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
