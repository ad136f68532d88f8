"""KeyedGcm is AES-256-GCM, byte for byte, for every record size and split."""

from __future__ import annotations

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.noise._gcm import ONE_SHOT_MAX, TAG_SIZE, KeyedGcm, TagMismatch

# AES-256 test cases 13-16 of D. McGrew and J. Viega, "The Galois/Counter
# Mode of Operation (GCM)", revised 2005, Appendix B (the 96-bit IV ones).
_K2 = "feffe9928665731c6d6a8f9467308308" * 2
_P = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_C = (
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
)
SPEC_VECTORS = [
    ("13", "00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    ("14", "00" * 32, "00" * 12, "00" * 16, "", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"),
    ("15", _K2, "cafebabefacedbaddecaf888", _P, "", _C, "b094dac5d93471bdec1a502270e3cc6c"),
    (
        "16",
        _K2,
        "cafebabefacedbaddecaf888",
        _P[:120],
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        _C[:120],
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]


# Records around the size where KeyedGcm turns from its one-shot path to its
# streaming one, block-aligned and not, are tested beside tiny and bigger ones.
BOUNDARY = ONE_SHOT_MAX


def open_whole(gcm: KeyedGcm, iv: bytes, ad: bytes, record: bytes, cut: int = 0) -> bytes:
    """Open ``record`` with open_split, cutting after ``cut`` plaintext bytes, and join the pieces."""
    head, middle, rest = gcm.open_split(iv, ad, memoryview(record), min(cut, len(record) - TAG_SIZE), lambda h: cut)
    return head + middle + rest


def seal(gcm: KeyedGcm, iv: bytes, ad: bytes, parts: tuple[bytes, ...]) -> bytes:
    out = bytearray(sum(len(p) for p in parts) + TAG_SIZE)
    gcm.seal_into(iv, ad, parts, memoryview(out))
    return bytes(out)


@pytest.mark.parametrize("case", SPEC_VECTORS, ids=[v[0] for v in SPEC_VECTORS])
def test_spec_vectors(case: tuple[str, ...]) -> None:
    _, key, iv, plain, ad, cipher, tag = (bytes.fromhex(x) if i else x for i, x in enumerate(case))
    gcm = KeyedGcm(key)
    assert seal(gcm, iv, ad, (plain,)) == cipher + tag
    assert open_whole(gcm, iv, ad, cipher + tag) == plain
    assert gcm.open(iv, ad, cipher + tag) == plain


sizes = st.one_of(
    st.integers(0, 64), st.integers(BOUNDARY - 20, BOUNDARY + 20), st.integers(BOUNDARY + 21, 70_000)
)


@settings(max_examples=150, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    iv=st.binary(min_size=12, max_size=12),
    ad=st.binary(max_size=70),
    size=sizes,
    split=st.integers(0, 70_000),
    seed=st.binary(min_size=1, max_size=16),
)
def test_matches_pycryptodome_gcm(key: bytes, iv: bytes, ad: bytes, size: int, split: int, seed: bytes) -> None:
    plain = (seed * (size // len(seed) + 1))[:size]
    cut = min(split, size)
    reference = AES.new(key, AES.MODE_GCM, nonce=iv)
    reference.update(ad)
    expected = b"".join(reference.encrypt_and_digest(plain))
    gcm = KeyedGcm(key)
    # Split plaintext (header, data) as the record layer passes it.
    assert seal(gcm, iv, ad, (plain[:cut], plain[cut:])) == expected
    assert open_whole(gcm, iv, ad, expected, cut) == plain
    head, middle, rest = gcm.open_split(iv, ad, memoryview(expected), 0, lambda head: cut)
    assert (head, middle, rest) == (b"", plain[:cut], plain[cut:])


@pytest.mark.parametrize("size", [0, 5, 5000, BOUNDARY, BOUNDARY + 1, 3 * BOUNDARY + 7])
def test_any_flipped_bit_is_refused_and_nothing_is_decrypted(size: int) -> None:
    gcm = KeyedGcm(bytes(range(32)))
    iv, ad = b"\x00" * 4 + (7).to_bytes(8, "big"), b"\x00\x00\x10\x00"
    sealed = seal(gcm, iv, ad, (bytes(size),))
    for position in sorted({0, size // 2, max(size - 1, 0), size, size + TAG_SIZE - 1}):
        record = bytearray(sealed)
        record[position] ^= 0x01
        tampered = bytes(record)
        with pytest.raises(TagMismatch):
            gcm.open_split(iv, ad, memoryview(record), 0, lambda head: size // 3)
        with pytest.raises(TagMismatch):
            gcm.open(iv, ad, bytes(record))
        assert record == tampered  # only read: still the ciphertext
    with pytest.raises(TagMismatch):
        open_whole(gcm, iv, ad + b"x", sealed)
    with pytest.raises(TagMismatch):
        open_whole(gcm, b"\x01" + iv[1:], ad, sealed)


def test_bad_arguments_are_refused() -> None:
    gcm = KeyedGcm(bytes(32))
    with pytest.raises(ValueError):
        gcm.seal_into(bytes(8), b"", (b"x",), memoryview(bytearray(17)))
    with pytest.raises(ValueError):
        gcm.seal_into(bytes(12), b"", (b"x", b"y"), memoryview(bytearray(TAG_SIZE + 3)))
    with pytest.raises(TagMismatch):
        gcm.open(bytes(12), b"", bytes(15))
    with pytest.raises(TagMismatch):
        gcm.open_split(bytes(12), b"", memoryview(bytes(TAG_SIZE + 11)), 12, lambda head: 0)
    with pytest.raises(ValueError):
        KeyedGcm(bytes(16))


@pytest.mark.parametrize("size", [100, 3 * BOUNDARY])
@pytest.mark.parametrize("claimed", [-5, 0, 40, 10**9])
def test_open_split_clamps_the_middle_to_the_record(size: int, claimed: int) -> None:
    gcm, iv = KeyedGcm(bytes(range(32))), bytes(12)
    plain = bytes(range(256)) * (size // 256) + bytes(size % 256)
    seen: list[bytes] = []

    def middle_size(head: bytes) -> int:
        seen.append(head)
        return claimed

    head, middle, rest = gcm.open_split(iv, b"ad", memoryview(seal(gcm, iv, b"ad", (plain,))), 12, middle_size)
    assert seen == [plain[:12]] and head == plain[:12]
    assert len(middle) == min(max(claimed, 0), size - 12)
    assert head + middle + rest == plain
