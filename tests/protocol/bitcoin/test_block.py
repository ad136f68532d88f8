"""protocol.bitcoin.block: header, merkle, BIP 34, BIP 141 commitment, subsidy (pure)."""

from __future__ import annotations

import pytest

from protocol.bitcoin.block import (
    REGTEST_BITS,
    BlockBuildError,
    BlockHeader,
    bits_to_target,
    block_subsidy,
    build_coinbase,
    coinbase_script_sig,
    merkle_root,
    script_num_push,
    sha256d,
    solve_header,
    witness_commitment,
)

# Bitcoin's genesis block header (mainnet), the protocol's best-known vector.
GENESIS_HEADER = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b2"
    "7ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c"
)
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def test_genesis_header_round_trip_and_hash() -> None:
    header = BlockHeader.parse(GENESIS_HEADER)
    assert header.serialize() == GENESIS_HEADER
    assert header.hash_hex() == GENESIS_HASH
    assert header.bits == 0x1D00FFFF and header.nonce == 2083236893
    # One transaction: the merkle root is its txid.
    assert merkle_root([header.merkle_root]) == header.merkle_root
    with pytest.raises(BlockBuildError):
        BlockHeader.parse(GENESIS_HEADER + b"\x00")


def test_merkle_root_duplicates_the_odd_leaf() -> None:
    a, b, c = (bytes([i]) * 32 for i in (1, 2, 3))
    assert merkle_root([a, b]) == sha256d(a + b)
    assert merkle_root([a, b, c]) == sha256d(sha256d(a + b) + sha256d(c + c))
    with pytest.raises(BlockBuildError):
        merkle_root([])


@pytest.mark.parametrize(
    ("height", "encoded"),
    [(0, "00"), (1, "51"), (16, "60"), (17, "0111"), (127, "017f"), (128, "028000"),
     (255, "02ff00"), (256, "020001"), (500_000, "0320a107")],
)
def test_bip34_height_push_matches_cscript(height: int, encoded: str) -> None:
    assert script_num_push(height).hex() == encoded


def test_coinbase_script_sig_bounds() -> None:
    assert len(coinbase_script_sig(1, b"\x00")) == 3
    with pytest.raises(BlockBuildError):
        coinbase_script_sig(1, b"")
    with pytest.raises(BlockBuildError):
        coinbase_script_sig(1, bytes(76))


def test_regtest_subsidy_halves_every_150_blocks() -> None:
    assert block_subsidy(1) == 50 * 100_000_000
    assert block_subsidy(149) == 50 * 100_000_000
    assert block_subsidy(150) == 25 * 100_000_000
    assert block_subsidy(150 * 64) == 0


def test_solved_header_meets_target() -> None:
    header = solve_header(BlockHeader(version=0x20000000, prev_hash=bytes(32), merkle_root=bytes(32),
                                      time=1_700_000_000, bits=REGTEST_BITS, nonce=0))
    assert int.from_bytes(header.hash(), "little") <= bits_to_target(REGTEST_BITS)


def test_coinbase_carries_commitment_and_reserved_witness() -> None:
    commitment = witness_commitment([b"\x11" * 32])
    assert commitment == sha256d(merkle_root([bytes(32), b"\x11" * 32]) + bytes(32))
    cb = build_coinbase(height=5, script_pubkey=b"\x51", value=1000, extra_nonce=b"\x01", commitment=commitment)
    assert bytes.fromhex("6a24aa21a9ed") + commitment in cb.raw
    assert cb.raw[4:6] == b"\x00\x01"  # BIP 144 marker and flag
    assert cb.raw.endswith(b"\x01\x20" + bytes(32) + bytes(4))  # reserved value, then locktime
