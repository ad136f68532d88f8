"""Stripes and the stripe map (specs/erasure.md §Stripe map, §Shares): any k shares give the chunks back."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from protocol.chunks import MAX_SEALED_SIZE
from protocol.erasure import NotEnoughShares, StripeMap, StripeMapError, decode_stripe, encode_stripe, share_address


def chunks(*sizes: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i, size in enumerate(sizes):
        data = hashlib.sha256(bytes([i])).digest() * (size // 32) + b"x" * (size % 32)
        out.append((hashlib.sha256(data).digest(), data))
    return out


def test_any_four_of_eight_shares_give_the_chunks_back() -> None:
    given = chunks(1000, 777, 1000, 5)
    stripe, shares = encode_stripe(given, 4, 8)
    assert [share_address(s) for s in shares] == list(stripe.shares)
    for subset in itertools.combinations(range(8), 4):
        assert decode_stripe(stripe, 4, {i: shares[i] for i in subset}) == given


def test_a_short_last_stripe_and_too_few_shares() -> None:
    given = chunks(300, 200)
    stripe, shares = encode_stripe(given, 4, 8)
    assert decode_stripe(stripe, 4, {i: shares[i] for i in (2, 3, 6, 7)}) == given
    with pytest.raises(NotEnoughShares):
        decode_stripe(stripe, 4, {i: shares[i] for i in (0, 5, 7)})


def test_a_wrong_share_is_caught_by_its_address_not_silently_decoded() -> None:
    given = chunks(64, 64, 64, 64)
    stripe, shares = encode_stripe(given, 4, 8)
    bad = bytes([shares[5][0] ^ 1]) + shares[5][1:]
    assert share_address(bad) != stripe.shares[5]  # what the transport checks per share
    with pytest.raises(ValueError):
        decode_stripe(stripe, 4, {0: shares[0], 1: shares[1], 2: shares[2], 5: bad})


def test_map_round_trips_and_rejects_non_canonical_bytes() -> None:
    s1, _ = encode_stripe(chunks(100, 90, 80, 70), 4, 8)
    s2, _ = encode_stripe(chunks(10), 4, 8)
    stripe_map = StripeMap(k=4, n=8, root=b"r" * 32, stripes=(s1, s2))
    blob = stripe_map.serialize()
    assert StripeMap.parse(blob) == stripe_map
    for bad in (blob + b"\0", blob[:-1], b"XXXX" + blob[4:], blob[:4] + b"\x02" + blob[5:]):
        with pytest.raises(StripeMapError):
            StripeMap.parse(bad)
    with pytest.raises(StripeMapError):
        StripeMap(k=5, n=4, root=b"r" * 32, stripes=(s1,))


def test_a_stripe_holding_the_longest_chunk_is_a_valid_map_and_one_byte_more_is_not() -> None:
    longest = chunks(MAX_SEALED_SIZE, 10)  # a 4 MiB data chunk sealed with its tag (specs/chunks.md §3)
    stripe, shares = encode_stripe(longest, 2, 3)
    assert stripe.block_size == MAX_SEALED_SIZE and len(shares[2]) == MAX_SEALED_SIZE
    stripe_map = StripeMap(k=2, n=3, root=b"r" * 32, stripes=(stripe,))
    assert StripeMap.parse(stripe_map.serialize()) == stripe_map
    assert decode_stripe(stripe, 2, {1: shares[1], 2: shares[2]}) == longest
    too_long, _ = encode_stripe(chunks(MAX_SEALED_SIZE + 1), 1, 2)
    with pytest.raises(StripeMapError):
        StripeMap(k=1, n=2, root=b"r" * 32, stripes=(too_long,))


def test_the_zero_blocks_of_a_short_stripe_are_known_not_stored() -> None:
    stripe, shares = encode_stripe(chunks(300, 200), 4, 8)
    assert list(stripe.padding(4)) == [2, 3] and stripe.stored(4) == [0, 1, 4, 5, 6, 7]
    assert shares[2] == shares[3] == bytes(stripe.block_size)  # what every reader has without asking
    zeros = {i: bytes(stripe.block_size) for i in stripe.padding(4)}
    assert decode_stripe(stripe, 4, {**zeros, 5: shares[5], 7: shares[7]}) == chunks(300, 200)
    full, _ = encode_stripe(chunks(64, 64, 64, 64), 4, 8)
    assert list(full.padding(4)) == [] and full.stored(4) == list(range(8))
