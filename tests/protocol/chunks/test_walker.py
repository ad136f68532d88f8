"""The verify cap: walking a file's chunks from its bare root (specs/chunks.md §6.5, §11)."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from protocol.chunks import (
    ChunkSealer,
    FileDecoder,
    IntegrityError,
    LocalChunkError,
    RawWalker,
)
from protocol.chunks._crypto import KIND_ROOT
from protocol.chunks._manifest import HEADER_SIZE, manifest_prefix
from tests.helpers.chunks import CS, encode


def walk(root: bytes, chunks: dict[bytes, bytes]) -> tuple[RawWalker, list[bytes]]:
    walker = RawWalker(root)
    seen = []
    while (address := walker.next_address()) is not None:
        walker.feed(chunks[address])
        seen.append(address)
    return walker, seen


@pytest.mark.parametrize(("size", "fanout"), [(0, None), (1, None), (CS, None), (3 * CS + 1, None),
                                              (9 * CS + 5, 2), (17 * CS, 3)])
def test_walker_visits_every_chunk_once_in_decoder_order(size: int, fanout: int | None) -> None:
    key = os.urandom(32)
    link, chunks, _ = encode(os.urandom(size), key, chunk_size=CS, fanout=fanout)
    walker, seen = walk(link.root, chunks)
    assert sorted(seen) == sorted(chunks) and len(seen) == len(chunks)
    assert walker.done and walker.chunks == len(chunks)
    assert walker.data_chunks == -(-size // CS)
    assert walker.manifest_chunks == len(chunks) - walker.data_chunks
    assert walker.stored_bytes == sum(len(c) for c in chunks.values())
    # The keyed decoder asks for the same chunks in the same order.
    dec = FileDecoder(link.root, key)
    asked = []
    while (address := dec.next_address()) is not None:
        asked.append(address)
        dec.feed(chunks[address])
    assert asked == seen


def test_upcoming_lists_the_open_node_and_walker_state_errors() -> None:
    link, chunks, _ = encode(os.urandom(5 * CS), os.urandom(32), chunk_size=CS)
    walker = RawWalker(link.root)
    assert walker.upcoming(8) == [link.root]
    walker.feed(chunks[link.root])
    ahead = walker.upcoming(3)
    assert len(ahead) == 3 and ahead[0] == walker.next_address()
    assert len(walker.upcoming(100)) == 5
    with pytest.raises(LocalChunkError):
        RawWalker(b"short")
    with pytest.raises(IntegrityError):
        walker.feed(chunks[ahead[1]])  # the walker wants ahead[0]
    with pytest.raises(LocalChunkError):
        walker.next_address()  # dead after a failure


def test_every_single_bit_flip_is_caught_by_the_walker() -> None:
    link, chunks, _ = encode(os.urandom(4 * CS + 3), os.urandom(32), chunk_size=CS, fanout=2)
    rng = random.Random(11)
    for address, chunk in chunks.items():
        for pos in {0, HEADER_SIZE - 1, HEADER_SIZE, len(chunk) - 1, rng.randrange(len(chunk))}:
            bad = bytearray(chunk)
            bad[pos] ^= 1 << rng.randrange(8)
            tampered = {**chunks, address: bytes(bad)}
            with pytest.raises(IntegrityError) as info:
                walk(link.root, tampered)
            assert info.value.address == address


def _forged(kind: int, level: int, children: bytes, tail: bytes) -> tuple[bytes, bytes]:
    chunk = manifest_prefix(kind, level, children) + tail
    return hashlib.sha256(chunk).digest(), chunk


def test_walker_rejects_hostile_roots_that_hash_correctly() -> None:
    # Whoever makes a root can make it say anything; the walker must still
    # stay within the format's bounds and name the chunk.
    child = os.urandom(32)
    for root, chunk in [
        _forged(KIND_ROOT, 1, b"", b"\x00" * 16),  # depth 1, no children
        _forged(KIND_ROOT, 40, child, b"\x00" * 16),  # deeper than MAX_DEPTH
        _forged(1, 0, child, b"\x00" * 16),  # an index node posing as the root
        _forged(KIND_ROOT, 0, child, b""),  # no room for a tag
        (hashlib.sha256(b"\x01" + bytes(23)).digest(), b"\x01" + bytes(23)),  # format 1
    ]:
        walker = RawWalker(root)
        with pytest.raises(IntegrityError) as info:
            walker.feed(chunk)
        assert info.value.address == root
    # A root of depth 1 whose child is a data-sized blob, not an index node.
    blob = os.urandom(100)
    root, chunk = _forged(KIND_ROOT, 1, hashlib.sha256(blob).digest(), b"\x00" * 16)
    walker = RawWalker(root)
    walker.feed(chunk)
    with pytest.raises(IntegrityError):
        walker.feed(blob)


def test_verify_cap_shows_addresses_but_not_metadata() -> None:
    name, media_type = "secret-plans.txt", "application/x-very-private"
    data = b"attack at dawn " * 5000
    link, chunks, _ = encode(data, os.urandom(32), chunk_size=CS, name=name, media_type=media_type)
    root_chunk = chunks[link.root]
    for secret in (name.encode(), media_type.encode(), b"attack at dawn"):
        assert all(secret not in chunk for chunk in chunks.values())
    walker, _ = walk(link.root, chunks)
    assert walker.data_chunks == 2 and root_chunk[HEADER_SIZE:HEADER_SIZE + 64] == b"".join(
        a for a in chunks if a != link.root)


def test_key_holders_detect_a_rewritten_cleartext_header() -> None:
    # An attacker without the key swaps the root's children and rehashes:
    # the walker cannot tell (the new root is the attacker's file), but the
    # GCM tag binds the header, so a key holder rejects it (§6.1, §11).
    key = os.urandom(32)
    link, chunks, _ = encode(os.urandom(2 * CS), key, chunk_size=CS)
    root_chunk = chunks[link.root]
    a, b = root_chunk[HEADER_SIZE:HEADER_SIZE + 32], root_chunk[HEADER_SIZE + 32:HEADER_SIZE + 64]
    swapped = root_chunk[:HEADER_SIZE] + b + a + root_chunk[HEADER_SIZE + 64:]
    new_root = hashlib.sha256(swapped).digest()
    RawWalker(new_root).feed(swapped)
    dec = FileDecoder(new_root, key)
    with pytest.raises(IntegrityError) as info:
        dec.feed(swapped)
    assert info.value.address == new_root
    # The same for an index node: reseal the root (with the key) over a
    # rewritten index node; the index node's own tag still catches it.
    link, chunks, order = encode(os.urandom(5 * CS), key, chunk_size=CS, fanout=2)
    dec = FileDecoder(link.root, key)
    dec.feed(chunks[link.root])
    manifest = dec.manifest
    assert manifest is not None and manifest.depth >= 1
    first_index = dec.next_address()
    node = chunks[first_index]
    c0, c1 = node[HEADER_SIZE:HEADER_SIZE + 32], node[HEADER_SIZE + 32:HEADER_SIZE + 64]
    forged_node = node[:HEADER_SIZE] + c1 + c0 + node[HEADER_SIZE + 64:]
    forged_addr = hashlib.sha256(forged_node).digest()
    children = forged_addr + manifest.children[32:]
    prefix = manifest_prefix(KIND_ROOT, manifest.depth, children)
    forged_root = prefix + ChunkSealer(key).seal(manifest.serialize_private(), KIND_ROOT, 0, 0, aad=prefix)
    forged_root_addr = hashlib.sha256(forged_root).digest()
    stored = {**chunks, forged_addr: forged_node, forged_root_addr: forged_root}
    dec = FileDecoder(forged_root_addr, key)
    dec.feed(forged_root)
    with pytest.raises(IntegrityError) as info:
        dec.feed(stored[dec.next_address()])
    assert info.value.address == forged_addr
