"""Hypothesis: any content, any size, any feed pattern, any fanout round-trips;
any single bit flip is caught (specs/chunks.md §6)."""

from __future__ import annotations

import hashlib
import random

import msgpack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.chunks import CDC_MAX, CDC_MIN, CdcParams, ChunkSealer, Chunker, FileDecoder, IntegrityError, RawWalker
from protocol.chunks._crypto import KIND_ROOT
from protocol.chunks._manifest import HEADER
from tests.helpers.chunks import CS, decode, encode, encode_v3

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def files(draw: st.DrawFn) -> bytes:
    size = draw(st.one_of(
        st.integers(min_value=0, max_value=6 * CS + 100),
        # near chunk boundaries, where off-by-one errors live
        st.builds(lambda k, d: max(0, k * CS + d), st.integers(min_value=0, max_value=6), st.integers(min_value=-2, max_value=2)),
    ))
    seed = draw(st.integers(min_value=0, max_value=2**32))
    pattern = draw(st.sampled_from(["random", "zeros", "repeat"]))
    if pattern == "zeros":
        return bytes(size)
    if pattern == "repeat":
        return (b"mu" * (size // 2 + 1))[:size]
    return random.Random(seed).randbytes(size)


@SETTINGS
@given(data=files(), key=st.binary(min_size=32, max_size=32), piece=st.integers(min_value=1, max_value=3 * CS),
       fanout=st.one_of(st.none(), st.integers(min_value=2, max_value=5)))
def test_round_trip(data: bytes, key: bytes, piece: int, fanout: int | None) -> None:
    piece = max(piece, len(data) // 64)  # keep tiny pieces from making huge files slow
    link, chunks, _ = encode(data, key, chunk_size=CS, piece=piece, fanout=fanout)
    assert decode(link, chunks) == data


@SETTINGS
@given(data=files(), key=st.binary(min_size=32, max_size=32), which=st.integers(min_value=0), bit=st.integers(min_value=0))
def test_single_bit_flip_never_yields_wrong_output(data: bytes, key: bytes, which: int, bit: int) -> None:
    link, chunks, order = encode(data, key, chunk_size=CS, fanout=2)
    target = order[which % len(order)]
    bad = bytearray(chunks[target])
    bad[(bit // 8) % len(bad)] ^= 1 << (bit % 8)
    tampered = {**chunks, target: bytes(bad)}
    dec = FileDecoder.from_link(link)
    out = bytearray()
    with pytest.raises(IntegrityError):
        while (address := dec.next_address()) is not None:
            out += dec.feed(tampered[address])
    assert data.startswith(bytes(out))


# A key holder can seal any plaintext as a "manifest". Whatever it is, the
# decoder must answer with IntegrityError (or a valid manifest), never crash.
_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.binary(max_size=80) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
_manifest_like = st.fixed_dictionaries(
    {},
    optional={"v": st.sampled_from([1, 2, -1]), "size": _values, "chunk_size": st.sampled_from([CS, 1000, 2**20]),
              "depth": st.integers(min_value=-1, max_value=20), "a": st.binary(max_size=200), "name": _values, "type": _values,
              "extra": _values},
)


@SETTINGS
@given(plain=st.one_of(st.binary(max_size=300), _manifest_like.map(lambda d: msgpack.packb(d, use_bin_type=True))),
       key=st.binary(min_size=32, max_size=32),
       header=st.tuples(st.sampled_from([1, 2, 3]), st.sampled_from([0, 1, 2, 3]), st.integers(0, 20),
                        st.sampled_from([0, 0, 1]), st.integers(0, 7)),
       children=st.binary(max_size=200))
def test_hostile_root_gives_integrity_error_or_valid_manifest(plain: bytes, key: bytes,
                                                              header: tuple[int, int, int, int, int],
                                                              children: bytes) -> None:
    # Cleartext header (§6.1) and private part both chosen by the attacker,
    # the private part sealed with the right key over that header.
    prefix = HEADER.pack(*header) + children
    chunk = prefix + bytes(ChunkSealer(key).seal(plain, KIND_ROOT, 0, 0, aad=prefix))
    root = hashlib.sha256(chunk).digest()
    dec = FileDecoder(root, key)
    try:
        dec.feed(chunk)
    except IntegrityError:
        pass
    else:
        assert dec.manifest is not None
        for address in dec.upcoming(10):
            assert len(address) == 32
    # The keyless walker, on the same bytes, also answers cleanly.
    walker = RawWalker(root)
    try:
        walker.feed(chunk)
    except IntegrityError:
        return
    assert walker.depth is not None and all(len(a) == 32 for a in walker.upcoming(10))


@SETTINGS
@given(data=files(), key=st.binary(min_size=32, max_size=32), fanout=st.one_of(st.none(), st.integers(2, 5)))
def test_walker_finds_exactly_the_encoded_chunks(data: bytes, key: bytes, fanout: int | None) -> None:
    link, chunks, _ = encode(data, key, chunk_size=CS, piece=max(CS, len(data) // 64), fanout=fanout)
    walker = RawWalker(link.root)
    seen = []
    while (address := walker.next_address()) is not None:
        walker.feed(chunks[address])
        seen.append(address)
    assert sorted(seen) == sorted(chunks)
    assert walker.data_chunks == -(-len(data) // CS)


# -- format 3: content-defined chunks (specs/chunks.md §5.2, §6.6) ---------------

SMALL_CDC = CdcParams(min_size=64, avg_size=256, max_size=1024)
V3_SIZES = st.one_of(
    st.integers(min_value=0, max_value=20_000),
    st.sampled_from([0, 1, 63, 64, 65, 1023, 1024, 1025, 2049]),
)


@SETTINGS
@given(size=V3_SIZES, seed=st.integers(min_value=0, max_value=2**32), piece=st.integers(min_value=1, max_value=5000),
       fanout=st.one_of(st.none(), st.integers(min_value=2, max_value=5)), convergent=st.booleans())
def test_v3_round_trip_small_cuts(size: int, seed: int, piece: int, fanout: int | None, convergent: bool) -> None:
    data = random.Random(seed).randbytes(size)
    keying: dict[str, object] = {"chunk_secret": bytes(32)} if convergent else {"key": bytes(range(32))}
    piece = max(piece, len(data) // 64)
    link, chunks, order = encode_v3(data, piece=piece, cdc=SMALL_CDC, fanout=fanout, **keying)
    assert decode(link, chunks) == data
    walker = RawWalker(link.root)
    while (address := walker.next_address()) is not None:
        walker.feed(chunks[address])
    assert walker.chunks == len(set(order))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(size=st.sampled_from([0, 1, CDC_MIN - 1, CDC_MIN, CDC_MAX, CDC_MAX + 1, 2 * CDC_MAX + 7]),
       seed=st.integers(min_value=0, max_value=2**32), piece=st.integers(min_value=1000, max_value=3 * CDC_MAX))
def test_v3_round_trip_default_cuts(size: int, seed: int, piece: int) -> None:
    data = random.Random(seed).randbytes(size)
    link, chunks, _ = encode_v3(data, piece=piece, chunk_secret=bytes(range(32)))
    assert decode(link, chunks) == data


@SETTINGS
@given(size=st.integers(min_value=0, max_value=30_000), seed=st.integers(min_value=0, max_value=2**32),
       splits=st.lists(st.integers(min_value=0, max_value=30_000), max_size=12))
def test_v3_cut_points_do_not_depend_on_feed_splits(size: int, seed: int, splits: list[int]) -> None:
    data = random.Random(seed).randbytes(size)
    whole = Chunker(SMALL_CDC)
    expected = whole.feed(data) + whole.finish()
    chunker = Chunker(SMALL_CDC)
    got: list[bytes] = []
    bounds = sorted({0, len(data), *(s % (len(data) + 1) for s in splits)})
    for a, b in zip(bounds, bounds[1:]):
        got += chunker.feed(data[a:b])
    got += chunker.finish()
    assert got == expected and b"".join(got) == data


@SETTINGS
@given(size=st.integers(min_value=0, max_value=8000), seed=st.integers(min_value=0, max_value=2**32),
       which=st.integers(min_value=0), bit=st.integers(min_value=0))
def test_v3_single_bit_flip_never_yields_wrong_output(size: int, seed: int, which: int, bit: int) -> None:
    data = random.Random(seed).randbytes(size)
    link, chunks, order = encode_v3(data, chunk_secret=bytes(32), cdc=SMALL_CDC, fanout=2)
    target = order[which % len(order)]
    bad = bytearray(chunks[target])
    bad[(bit // 8) % len(bad)] ^= 1 << (bit % 8)
    tampered = {**chunks, target: bytes(bad)}
    dec = FileDecoder.from_link(link)
    with pytest.raises(IntegrityError):
        while (address := dec.next_address()) is not None:
            dec.feed(tampered[address])
