"""Round trips, tree shapes, key modes and tamper detection (specs/chunks.md §6)."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from protocol.chunks import (
    ADDRESS_SIZE,
    TAG_SIZE,
    ConvergentKeyHasher,
    FileDecoder,
    FileEncoder,
    IntegrityError,
    Link,
    LocalChunkError,
    RootRecord,
    max_fanout,
)
from protocol.chunks._manifest import HEADER_SIZE, MAX_ROOT_PRIVATE
from tests.helpers.chunks import CS, decode, encode


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 5 * CS + 17])
@pytest.mark.parametrize("piece", [1 << 20, 4096, CS, CS + 3])
def test_round_trip_edge_sizes(size: int, piece: int) -> None:
    data = os.urandom(size)
    link, chunks, _ = encode(data, os.urandom(32), chunk_size=CS, piece=piece)
    assert decode(link, chunks) == data
    # One chunk per started CS block plus the root: every chunk is needed.
    assert len(chunks) == -(-size // CS) + 1


def test_chunks_are_ciphertext_with_tag_and_addressed_by_sha256() -> None:
    data = b"A" * (2 * CS + 5)
    link, chunks, order = encode(data, os.urandom(32), chunk_size=CS)
    for address, chunk in chunks.items():
        assert hashlib.sha256(chunk).digest() == address
        assert b"AAAAAAAA" not in chunk
    assert [len(chunks[a]) for a in order[:3]] == [CS + TAG_SIZE, CS + TAG_SIZE, 5 + TAG_SIZE]
    assert order[-1] == link.root


@pytest.mark.parametrize("fanout,blocks", [(2, 9), (2, 8), (3, 10), (2, 33), (4, 17)])
def test_multi_level_manifest_round_trip(fanout: int, blocks: int) -> None:
    data = os.urandom(blocks * CS - 7)
    link, chunks, order = encode(data, os.urandom(32), chunk_size=CS, fanout=fanout)
    assert decode(link, chunks) == data
    dec = FileDecoder.from_link(link)
    dec.feed(chunks[link.root])
    assert dec.manifest is not None and dec.manifest.depth >= 2
    # Children are emitted before any node naming them: a store filled in
    # emit order never holds a dangling node.
    position = {address: i for i, address in enumerate(order)}
    walker = FileDecoder.from_link(link)
    visited = 0
    while (address := walker.next_address()) is not None:
        visited += 1
        if not walker.feed(chunks[address]) and address != order[0]:
            children = walker.upcoming(fanout)
            assert children and all(position[c] < position[address] for c in children)
    assert visited == len(chunks)


def test_tree_depth_grows_with_size_and_stays_bounded() -> None:
    depths = []
    for blocks in (2, 3, 5, 9, 17):
        link, chunks, _ = encode(os.urandom(blocks * 100 + CS * (blocks - 1)), os.urandom(32), chunk_size=CS, fanout=2)
        dec = FileDecoder.from_link(link)
        dec.feed(chunks[link.root])
        assert dec.manifest is not None
        depths.append(dec.manifest.depth)
    assert depths == sorted(depths) and depths[0] == 0 and depths[-1] == 4


def test_default_fanout_fits_in_one_chunk() -> None:
    fan = max_fanout(CS)
    record = RootRecord(size=fan * CS, chunk_size=CS, depth=0, children=b"\xff" * (fan * ADDRESS_SIZE),
                        name="n" * 1024, media_type="t" * 255)
    private = record.serialize_private()
    assert len(private) <= MAX_ROOT_PRIVATE
    # header + every address + the sealed private part still fit in one chunk (§6.1)
    assert HEADER_SIZE + fan * ADDRESS_SIZE + len(private) + TAG_SIZE <= CS


def test_name_and_media_type_travel_in_the_encrypted_root() -> None:
    link, chunks, _ = encode(b"hello", os.urandom(32), chunk_size=CS, name="hello.txt", media_type="text/plain")
    dec = FileDecoder.from_link(link)
    dec.feed(chunks[link.root])
    assert dec.manifest is not None
    assert (dec.manifest.name, dec.manifest.media_type, dec.manifest.size) == ("hello.txt", "text/plain", 5)
    assert b"hello.txt" not in chunks[link.root]


def test_random_keys_give_different_roots() -> None:
    data = os.urandom(CS + 1)
    first, _, _ = encode(data, os.urandom(32), chunk_size=CS)
    second, _, _ = encode(data, os.urandom(32), chunk_size=CS)
    assert first.root != second.root


def _convergent_key(secret: bytes, data: bytes, **kw: object) -> bytes:
    hasher = ConvergentKeyHasher(secret, chunk_size=CS, fanout=max_fanout(CS), name=kw.get("name"), media_type=None)  # type: ignore[arg-type]
    hasher.update(data[:100])
    hasher.update(data[100:])
    return hasher.file_key()


def test_convergent_same_file_and_secret_same_root_other_secret_other_root() -> None:
    data = os.urandom(2 * CS + 9)
    secret, other = os.urandom(32), os.urandom(32)
    a, chunks_a, _ = encode(data, _convergent_key(secret, data), chunk_size=CS)
    b, chunks_b, _ = encode(data, _convergent_key(secret, data), chunk_size=CS, piece=777)
    c, _, _ = encode(data, _convergent_key(other, data), chunk_size=CS)
    assert a == b and chunks_a == chunks_b
    assert c.root != a.root
    assert decode(a, chunks_a) == data


def test_convergent_key_binds_name_and_content() -> None:
    data = os.urandom(1000)
    secret = os.urandom(32)
    base = _convergent_key(secret, data)
    assert _convergent_key(secret, data, name="x") != base
    assert _convergent_key(secret, data[:-1] + bytes([data[-1] ^ 1])) != base


def test_wrong_key_is_an_integrity_error_naming_the_root() -> None:
    link, chunks, _ = encode(os.urandom(CS + 1), os.urandom(32), chunk_size=CS)
    with pytest.raises(IntegrityError) as info:
        decode(Link(link.root, os.urandom(32)), chunks)
    assert info.value.address == link.root
    assert link.root.hex() in str(info.value)


def test_every_single_bit_flip_in_every_chunk_is_caught() -> None:
    data = os.urandom(4 * CS + 3)
    link, chunks, _ = encode(data, os.urandom(32), chunk_size=CS, fanout=2)
    rng = random.Random(7)
    for address, chunk in chunks.items():
        positions = {0, len(chunk) - 1, len(chunk) - TAG_SIZE, rng.randrange(len(chunk))}
        for pos in positions:
            bad = bytearray(chunk)
            bad[pos] ^= 1 << rng.randrange(8)
            tampered = dict(chunks)
            tampered[address] = bytes(bad)
            dec = FileDecoder.from_link(link)
            out = bytearray()
            with pytest.raises(IntegrityError) as info:
                while (want := dec.next_address()) is not None:
                    out += dec.feed(tampered[want])
            assert info.value.address == address
            # Whatever came out before the error is a true prefix of the file.
            assert data.startswith(bytes(out))


def test_swapped_chunks_are_rejected() -> None:
    link, chunks, order = encode(os.urandom(3 * CS), os.urandom(32), chunk_size=CS)
    dec = FileDecoder.from_link(link)
    dec.feed(chunks[link.root])
    with pytest.raises(IntegrityError):
        dec.feed(chunks[order[1]])  # the decoder wants order[0]


def test_correctly_addressed_chunk_from_another_file_is_rejected() -> None:
    # A chunk sealed with another key at the same position hashes fine to
    # its own address but is not the one the manifest names.
    key = os.urandom(32)
    link, chunks, order = encode(os.urandom(2 * CS), key, chunk_size=CS)
    dec = FileDecoder.from_link(link)
    dec.feed(chunks[link.root])
    other = FileEncoder(os.urandom(32), chunk_size=CS).feed(os.urandom(CS))[0][1]
    with pytest.raises(IntegrityError):
        dec.feed(other)


def test_decoder_state_errors_and_upcoming() -> None:
    link, chunks, order = encode(os.urandom(3 * CS), os.urandom(32), chunk_size=CS)
    dec = FileDecoder.from_link(link)
    assert dec.upcoming(5) == [link.root]
    dec.feed(chunks[link.root])
    assert dec.upcoming(2) == order[:2]
    assert dec.upcoming(10) == order[:3]
    for address in order[:3]:
        dec.feed(chunks[address])
    assert dec.done and dec.bytes_out == 3 * CS
    with pytest.raises(LocalChunkError):
        dec.feed(b"x")
    with pytest.raises(LocalChunkError):
        FileDecoder.from_link(link.verify_cap)


def test_encoder_rejects_bad_parameters_and_reuse() -> None:
    key = os.urandom(32)
    for bad in (1000, CS - 1, 3 * CS, 8 * 1024 * 1024):
        with pytest.raises(LocalChunkError):
            FileEncoder(key, chunk_size=bad)
    with pytest.raises(LocalChunkError):
        FileEncoder(key[:31])
    with pytest.raises(LocalChunkError):
        FileEncoder(key, chunk_size=CS, fanout=1)
    with pytest.raises(LocalChunkError):
        FileEncoder(key, name="x" * 2000)
    enc = FileEncoder(key, chunk_size=CS)
    with pytest.raises(LocalChunkError):
        _ = enc.root
    enc.finish()
    with pytest.raises(LocalChunkError):
        enc.feed(b"more")
