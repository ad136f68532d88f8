"""Format 3: FastCDC cuts, per-chunk convergent keys, round trips (specs/chunks.md §5.2, §4.4, §6.6)."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest

from protocol.chunks import (
    CDC_MAX,
    CDC_MIN,
    CdcFileEncoder,
    CdcParams,
    Chunker,
    FileDecoder,
    IntegrityError,
    LocalChunkError,
    RawWalker,
)
from protocol.chunks._cdc import cut_lengths
from protocol.chunks._crypto import KIND_ROOT
from protocol.chunks._keys3 import PositionalKeys, open_keyed, seal_keyed

SECRET = bytes(range(32))
SMALL = CdcParams(min_size=64, avg_size=256, max_size=1024)


def _data(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def encode(data: bytes, *, feeds: int = 1, **kwargs: object) -> tuple[CdcFileEncoder, dict[bytes, bytes], list[bytes]]:
    """Encode ``data`` in ``feeds`` ragged pieces; return the encoder, the store and the data-chunk addresses."""
    enc = CdcFileEncoder(**kwargs)  # type: ignore[arg-type]
    out = []
    rng = random.Random(feeds)
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(feeds - 1))
    for a, b in zip([0, *cuts], [*cuts, len(data)]):
        out += enc.feed(data[a:b])
    out += enc.finish()
    store = {address: bytes(chunk) for address, chunk in out}
    return enc, store, data_addresses(enc, store)


def data_addresses(enc: CdcFileEncoder, store: dict[bytes, bytes]) -> list[bytes]:
    dec = FileDecoder.from_link(enc.link)
    found = []
    while dec.data_slots(1) or dec.next_address() is not None:
        slots = dec.data_slots(1)
        if slots:
            found.append(slots[0].address)
            dec.accept_data(slots[0], dec.open_data(slots[0], store[slots[0].address]))
        else:
            address = dec.next_address()
            assert address is not None
            dec.feed(store[address])
    return found


def decode(enc: CdcFileEncoder, store: dict[bytes, bytes]) -> bytes:
    dec = FileDecoder.from_link(enc.link)
    out = bytearray()
    while (address := dec.next_address()) is not None:
        out += dec.feed(store[address])
    walker = RawWalker(enc.root)
    while (address := walker.next_address()) is not None:
        walker.feed(store[address])
    assert walker.chunks == len(store) and walker.version == 3
    return bytes(out)


def test_chunk_sizes_stay_within_bounds_and_average_near_one_mib() -> None:
    lengths = cut_lengths(_data(48 * 1024 * 1024))
    assert sum(lengths) == 48 * 1024 * 1024
    assert all(CDC_MIN <= n <= CDC_MAX for n in lengths[:-1]) and 0 < lengths[-1] <= CDC_MAX
    assert 1024 * 1024 <= sum(lengths) / len(lengths) <= 1.5 * 1024 * 1024


def test_cut_points_do_not_depend_on_feed_sizes() -> None:
    data = _data(12 * 1024 * 1024 + 5)
    whole = cut_lengths(data)
    for piece in (1 << 16, 1_000_003, 5 * 1024 * 1024):
        chunker = Chunker()
        chunks = [c for i in range(0, len(data), piece) for c in chunker.feed(data[i:i + piece])]
        chunks += chunker.finish()
        assert [len(c) for c in chunks] == whole and b"".join(chunks) == data


def test_a_small_stream_does_not_allocate_the_whole_hold_and_growth_keeps_the_cuts() -> None:
    # A folder of 4 KiB files made two 8 MiB holds per file (specs/chunks.md §8.5 Bounds: CDC_HOLD
    # is a bound, not an allocation).
    tracemalloc.start()
    try:
        chunker = Chunker()
        chunks = chunker.feed(_data(4096)) + chunker.finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [len(c) for c in chunks] == [4096] and peak < 256 * 1024
    data = _data(9 * 1024 * 1024 + 7)
    chunker = Chunker()
    grown = [c for i in range(0, len(data), 4096) for c in chunker.feed(data[i:i + 4096])] + chunker.finish()
    assert [len(c) for c in grown] == cut_lengths(data) and b"".join(grown) == data


def test_constant_input_is_cut_at_max() -> None:
    assert cut_lengths(bytes(9 * 1024 * 1024)) == [CDC_MAX, CDC_MAX, 1024 * 1024]


def test_chunker_refuses_use_after_finish() -> None:
    chunker = Chunker()
    assert chunker.finish() == []
    with pytest.raises(LocalChunkError):
        chunker.feed(b"x")


@pytest.mark.parametrize("size", [0, 1, CDC_MIN - 1, CDC_MIN, CDC_MAX + 1, 9 * 1024 * 1024 + 3])
@pytest.mark.parametrize("keying", ["key", "secret"])
def test_round_trip(size: int, keying: str) -> None:
    data = _data(size)
    kwargs: dict[str, object] = {"key": bytes(32)} if keying == "key" else {"chunk_secret": SECRET}
    enc, store, _ = encode(data, feeds=5, name="f.bin", media_type="application/octet-stream", **kwargs)
    assert decode(enc, store) == data and enc.size == size
    dec = FileDecoder.from_link(enc.link)
    dec.feed(store[enc.root])
    assert dec.manifest is not None and dec.manifest.name == "f.bin" and dec.manifest.size == size


def test_deep_tree_round_trip_and_entry_checks() -> None:
    data = _data(40_000)
    enc, store, addresses = encode(data, feeds=3, chunk_secret=SECRET, cdc=SMALL, fanout=3)
    assert decode(enc, store) == data
    dec = FileDecoder.from_link(enc.link)
    dec.feed(store[enc.root])
    assert dec.manifest is not None and dec.manifest.depth >= 3 and len(addresses) > 27


def test_equal_files_under_one_secret_share_every_chunk_and_the_root() -> None:
    data = _data(6 * 1024 * 1024)
    first, store1, _ = encode(data, feeds=2, chunk_secret=SECRET)
    again, store2, _ = encode(data, feeds=9, chunk_secret=SECRET)
    assert first.link == again.link and store1 == store2
    other, store3, _ = encode(data, chunk_secret=bytes(32))
    assert not set(store3) & set(store1)
    random_key, store4, _ = encode(data, key=bytes(range(1, 33)))
    assert not set(store4) & set(store1)


def test_edits_change_few_data_chunks_under_one_secret() -> None:
    """specs/chunks.md §5.2: an insertion touches the chunks around it only."""
    size = 64 * 1024 * 1024
    data = _data(size, seed=3)
    _, _, before = encode(data, chunk_secret=SECRET)
    middle = size // 2
    _, _, inserted = encode(data[:middle] + _data(100, seed=4) + data[middle:], chunk_secret=SECRET)
    _, _, appended = encode(data + b"!", chunk_secret=SECRET)
    assert len(set(inserted) - set(before)) <= 3
    assert len(set(appended) - set(before)) <= 2


def test_out_of_line_sealing_matches_feed() -> None:
    data = _data(7 * 1024 * 1024)
    enc, store, _ = encode(data, chunk_secret=SECRET)
    other = CdcFileEncoder(chunk_secret=SECRET)
    chunker = Chunker()
    produced = {}
    sealed = [(i, other.seal_data(i, p)) for p in chunker.feed(data) + chunker.finish()
              for i in [other.next_data(len(p))]]
    for index, item in reversed(sealed):  # sealing order does not matter
        produced[item.address] = bytes(item.chunk)
    for index, item in sealed:
        produced.update((a, bytes(c)) for a, c in other.add_data(index, item))
    produced.update((a, bytes(c)) for a, c in other.finish())
    assert other.link == enc.link and produced == store


def test_tampered_data_chunk_and_wrong_key_are_integrity_errors() -> None:
    data = _data(3 * 1024 * 1024)
    enc, store, addresses = encode(data, key=bytes(32))
    dec = FileDecoder(enc.root, bytes(range(32)))
    with pytest.raises(IntegrityError):
        dec.feed(store[enc.root])
    dec = FileDecoder.from_link(enc.link)
    dec.feed(store[enc.root])
    slot = dec.data_slots(1)[0]
    bad = bytearray(store[slot.address])
    bad[0] ^= 1
    with pytest.raises(IntegrityError):
        dec.open_data(slot, bad)
    with pytest.raises(IntegrityError):  # another chunk's bytes
        dec.open_data(slot, store[addresses[1]])


def test_encoder_needs_exactly_one_keying() -> None:
    with pytest.raises(LocalChunkError):
        CdcFileEncoder()
    with pytest.raises(LocalChunkError):
        CdcFileEncoder(bytes(32), chunk_secret=SECRET)
    with pytest.raises(LocalChunkError):
        CdcFileEncoder(chunk_secret=b"short")


def test_entry_lengths_that_do_not_add_up_are_refused_before_any_data() -> None:
    """§6.6 Reading: a key holder who reseals a root with a lying length is still caught."""
    data = _data(3 * 1024 * 1024)
    key = bytes(range(32))
    enc, store, _ = encode(data, key=key)
    root = store[enc.root]
    count = int.from_bytes(root[4:8], "big")
    prefix = root[:8 + 32 * count]
    root_key = PositionalKeys(key).key(KIND_ROOT, 0, 0)
    private = bytearray(open_keyed(root_key, root[len(prefix):], enc.root, aad=prefix))
    private[7] ^= 1  # first entry's length, low byte
    forged = prefix + bytes(seal_keyed(root_key, private, aad=prefix))
    dec = FileDecoder(hashlib.sha256(forged).digest(), key)
    with pytest.raises(IntegrityError, match="do not add up"):
        dec.feed(forged)


@pytest.mark.parametrize("keying", ["key", "secret"])
def test_seals_to_knows_a_format_3_data_chunk_by_its_plaintext_alone(keying: str) -> None:
    data = _data(3 * 1024 * 1024)
    enc, store, addresses = encode(data, **({"key": bytes(32)} if keying == "key" else {"chunk_secret": SECRET}))
    dec = FileDecoder.from_link(enc.link)
    dec.feed(store[enc.root])
    offset = 0
    for slot in dec.data_slots(len(addresses)):
        plain = data[offset:offset + slot.size]
        assert dec.seals_to(slot, plain)
        flipped = bytearray(plain)
        flipped[-1] ^= 1
        assert not dec.seals_to(slot, flipped)
        offset += slot.size
    assert offset == len(data)
