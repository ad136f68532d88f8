"""Sealing and opening data chunks out of line (specs/chunks.md §6.3, §6.4).

FileEncoder.next_data/seal_data/add_data and FileDecoder.data_slots/
open_data/accept_data let the node seal and open several data chunks at once;
these tests pin that they produce and accept exactly what feed() does, in any
order of sealing/opening, and keep every check feed() makes.
"""

from __future__ import annotations

import os
import random

import pytest

from protocol.chunks import (
    TAG_SIZE,
    DataSlot,
    FileDecoder,
    FileEncoder,
    IntegrityError,
    Link,
    LocalChunkError,
)
from tests.helpers.chunks import CS, collect, decode, encode


def encode_out_of_line(data: bytes, key: bytes, *, shuffle: random.Random, batch: int = 5,
                       **kwargs: object) -> tuple[Link, dict[bytes, bytes], list[bytes]]:
    """Encode by claiming ``batch`` chunks, sealing them in shuffled order, adding in order."""
    enc = FileEncoder(key, **kwargs)  # type: ignore[arg-type]
    size = enc.chunk_size
    chunks: dict[bytes, bytes] = {}
    order: list[bytes] = []
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    for start in range(0, len(pieces), batch):
        claimed = [(enc.next_data(len(p)), p) for p in pieces[start:start + batch]]
        sealed = {}
        for index, piece in shuffle.sample(claimed, len(claimed)):
            sealed[index] = enc.seal_data(index, piece)
        for index, _ in claimed:
            address, chunk = sealed[index]
            collect([(address, chunk)] + enc.add_data(index, address), chunks, order)
    collect(enc.finish(), chunks, order)
    return enc.link, chunks, order


def decode_out_of_line(link: Link, chunks: dict[bytes, bytes], *, shuffle: random.Random, depth: int = 4) -> bytes:
    """Decode opening up to ``depth`` data chunks ahead, in shuffled order."""
    dec = FileDecoder.from_link(link)
    out = bytearray()
    while True:
        slots = dec.data_slots(depth)
        if slots:
            opened = {s.index: dec.open_data(s, chunks[s.address]) for s in shuffle.sample(slots, len(slots))}
            for slot in slots:
                out += dec.accept_data(slot, opened[slot.index])
        elif (address := dec.next_address()) is not None:
            out += dec.feed(chunks[address])
        else:
            return bytes(out)


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 7 * CS + 5])
@pytest.mark.parametrize("fanout", [None, 2, 3])
def test_out_of_line_encoding_is_byte_identical_to_feed(size: int, fanout: int | None) -> None:
    data, key = os.urandom(size), os.urandom(32)
    rng = random.Random(size)
    link, chunks, order = encode_out_of_line(data, key, chunk_size=CS, fanout=fanout, shuffle=rng)
    ref_link, ref_chunks, ref_order = encode(data, key, chunk_size=CS, fanout=fanout, piece=CS + 7)
    assert link == ref_link and chunks == ref_chunks and order == ref_order
    # Both decoders read it back, and agree on every byte.
    assert decode(link, chunks) == data
    assert decode_out_of_line(link, chunks, shuffle=rng) == data


def test_encoder_claims_enforce_order_and_whole_chunks() -> None:
    enc = FileEncoder(os.urandom(32), chunk_size=CS)
    first, second = enc.next_data(CS), enc.next_data(CS)
    a2, _ = enc.seal_data(second, b"y" * CS)
    with pytest.raises(LocalChunkError, match="out of order"):
        enc.add_data(second, a2)
    with pytest.raises(LocalChunkError, match="never added"):
        enc.finish()
    with pytest.raises(LocalChunkError, match="feed cannot follow"):
        enc.feed(b"z")
    a1, _ = enc.seal_data(first, b"x" * CS)
    enc.add_data(first, a1)
    enc.add_data(second, a2)
    enc.next_data(10)  # a short chunk ends the data
    with pytest.raises(LocalChunkError, match="must be the last"):
        enc.next_data(CS)
    with pytest.raises(LocalChunkError, match="1 to"):
        FileEncoder(os.urandom(32), chunk_size=CS).next_data(0)
    fed = FileEncoder(os.urandom(32), chunk_size=CS)
    fed.feed(b"partial")
    with pytest.raises(LocalChunkError, match="partial feed"):
        fed.next_data(CS)


def test_data_slots_follow_the_tree_and_stop_at_manifest_chunks() -> None:
    data = os.urandom(5 * CS + 3)
    link, chunks, _ = encode(data, os.urandom(32), chunk_size=CS, fanout=2)
    dec = FileDecoder.from_link(link)
    assert dec.data_slots(4) == []  # the root comes first
    seen: list[DataSlot] = []
    while (address := dec.next_address()) is not None:
        slots = dec.data_slots(8)
        if not slots:
            dec.feed(chunks[address])
            continue
        assert len(slots) <= 2 and slots[0].address == address  # one fanout-2 node at a time
        assert dec.data_slots(8, skip=len(slots)) == []
        for slot in slots:
            dec.accept_data(slot, dec.open_data(slot, chunks[slot.address]))
        seen += slots
    assert [s.index for s in seen] == list(range(6))
    assert [s.size for s in seen] == [CS] * 5 + [3]


def test_open_data_rejects_corruption_and_accept_rejects_the_wrong_slot() -> None:
    data = os.urandom(3 * CS)
    link, chunks, _ = encode(data, os.urandom(32), chunk_size=CS)
    dec = FileDecoder.from_link(link)
    dec.feed(chunks[link.root])
    first, second, third = dec.data_slots(3)
    flipped = bytearray(chunks[second.address])
    flipped[7] ^= 1
    with pytest.raises(IntegrityError) as err:
        dec.open_data(second, flipped)
    assert err.value.address == second.address and second.address.hex() in str(err.value)
    # Right bytes under another slot's index: the hash matches, the tag does not.
    with pytest.raises(IntegrityError, match="failed authentication"):
        dec.open_data(DataSlot(second.address, third.index, CS), chunks[second.address])
    with pytest.raises(IntegrityError, match="expected"):
        dec.open_data(DataSlot(second.address, second.index, CS - 1), chunks[second.address])
    plain_second = dec.open_data(second, chunks[second.address])
    with pytest.raises(LocalChunkError, match="out of order"):
        dec.accept_data(second, plain_second)
    plain_first = dec.open_data(first, chunks[first.address])
    with pytest.raises(LocalChunkError, match="out of order"):
        dec.accept_data(first, plain_first[:-1])
    out = dec.accept_data(first, plain_first) + dec.accept_data(second, plain_second)
    out += dec.accept_data(third, dec.open_data(third, chunks[third.address]))
    assert bytes(out) == data and dec.done
    assert len(chunks[first.address]) == CS + TAG_SIZE


def test_seals_to_knows_a_data_chunk_by_its_plaintext_alone() -> None:
    data = os.urandom(3 * CS - 9)
    link, chunks, _ = encode(data, os.urandom(32), chunk_size=CS)
    dec = FileDecoder.from_link(link)
    dec.feed(chunks[link.root])
    first, second, third = dec.data_slots(3)
    assert dec.seals_to(first, data[:CS]) and dec.seals_to(third, data[2 * CS:])
    flipped = bytearray(data[CS:2 * CS])
    flipped[5] ^= 1
    assert not dec.seals_to(second, flipped)
    assert not dec.seals_to(second, data[:CS])  # another chunk's plaintext: another position
    assert not dec.seals_to(third, data[2 * CS:] + b"\0")  # the wrong size
    assert dec.data_slots(3) == [first, second, third]  # the decoder's state is left alone
