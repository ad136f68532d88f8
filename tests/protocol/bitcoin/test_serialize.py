"""CompactSize, the bounded reader and transaction (de)serialization edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.bitcoin import (
    MAX_COMPACT_SIZE,
    DecodeError,
    OutPoint,
    Reader,
    Transaction,
    TxIn,
    TxOut,
    compact_size,
    hash256,
)

WITNESS_TX = (
    "01000000000102fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f00000000494830450221008b9d1dc26ba6"
    "a9cb62127b02742fa9d754cd3bebf337f7a55d114c8e5cdd30be022040529b194ba3f9281a99f2b1c0a19c0489bc22ede944ccf4ecbab4"
    "cc618ef3ed01eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb2"
    "06000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d5"
    "0ce2f0167faa815988ac000247304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a0220573a954c"
    "4518331561406f90300e8f3358f51928d43c212a8caed02de67eebee0121025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f6"
    "2fc70f07aeee635711000000"
)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [(0, "00"), (0xFC, "fc"), (0xFD, "fdfd00"), (0xFFFF, "fdffff"), (0x10000, "fe00000100"), (0x2000000, "fe00000002")],
)
def test_compact_size_encoding(n: int, encoded: str) -> None:
    assert compact_size(n).hex() == encoded
    r = Reader(bytes.fromhex(encoded))
    assert r.compact_size() == n
    r.finish()


@pytest.mark.parametrize("encoded", ["fdfc00", "fe0000ffff"[:10], "fe00ff0000", "ff00000000ff000000"])
def test_non_minimal_or_oversized_compact_size_is_rejected(encoded: str) -> None:
    with pytest.raises(DecodeError):
        Reader(bytes.fromhex(encoded)).compact_size()


def test_compact_size_above_limit_is_rejected() -> None:
    with pytest.raises(DecodeError, match="limit"):
        Reader(compact_size(MAX_COMPACT_SIZE + 1)).compact_size()


def test_reader_refuses_truncation_and_huge_counts() -> None:
    with pytest.raises(DecodeError):
        Reader(b"\x05abc").var_bytes()
    with pytest.raises(DecodeError):
        Reader(compact_size(1_000_000) + bytes(100)).count(9)
    with pytest.raises(DecodeError):
        Reader(b"ab").read(3)


def test_witness_transaction_ids() -> None:
    tx = Transaction.from_hex(WITNESS_TX)
    assert tx.has_witness
    assert tx.txid == hash256(tx.serialize_legacy())
    assert tx.wtxid == hash256(bytes.fromhex(WITNESS_TX))
    assert tx.txid_hex() == tx.txid[::-1].hex()
    assert tx.wtxid_hex() != tx.txid_hex()
    assert tx.weight() == 3 * len(tx.serialize_legacy()) + len(tx.serialize())


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError, match="trailing"):
        Transaction.parse(bytes.fromhex(WITNESS_TX) + b"\x00")


def test_every_truncation_is_rejected() -> None:
    data = bytes.fromhex(WITNESS_TX)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            Transaction.parse(data[:cut])


def test_superfluous_witness_flag_is_rejected() -> None:
    tx = Transaction.from_hex(WITNESS_TX).with_witnesses([(), ()])
    legacy = tx.serialize()
    assert legacy[4] != 0
    # Re-insert marker and flag with two empty witness stacks.
    forged = legacy[:4] + b"\x00\x01" + legacy[4:-4] + b"\x00\x00" + legacy[-4:]
    with pytest.raises(DecodeError, match="witness"):
        Transaction.parse(forged)


def test_unknown_flag_and_empty_lists_are_rejected() -> None:
    data = bytes.fromhex(WITNESS_TX)
    with pytest.raises(DecodeError):
        Transaction.parse(data[:5] + b"\x02" + data[6:])
    no_outputs = Transaction.from_hex(WITNESS_TX).serialize_legacy()
    with pytest.raises(DecodeError):
        Transaction.parse(bytes.fromhex("01000000") + b"\x00\x00" + bytes(4))
    assert Transaction.parse(no_outputs).serialize() == no_outputs


def test_non_minimal_length_inside_a_transaction_is_rejected() -> None:
    tx = Transaction(2, (TxIn(OutPoint(bytes(32), 0)),), (TxOut(1000, b"\x00\x14" + bytes(20)),))
    data = tx.serialize()
    # The output script length 0x16 re-encoded as fd1600.
    i = data.index(b"\x16\x00\x14")
    forged = data[:i] + b"\xfd\x16\x00" + data[i + 1 :]
    with pytest.raises(DecodeError, match="non-minimal"):
        Transaction.parse(forged)


def test_amount_outside_money_range_is_rejected() -> None:
    tx = Transaction(2, (TxIn(OutPoint(bytes(32), 0)),), (TxOut(1000, b"\x51"),))
    data = bytearray(tx.serialize())
    i = data.index((1000).to_bytes(8, "little"))
    data[i : i + 8] = (-1).to_bytes(8, "little", signed=True)
    with pytest.raises(DecodeError, match="MAX_MONEY"):
        Transaction.parse(bytes(data))
    with pytest.raises(ValueError):
        TxOut(-1, b"")


scripts = st.binary(max_size=60)
txins = st.builds(
    TxIn,
    st.builds(OutPoint, st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1)),
    scripts,
    st.integers(0, 2**32 - 1),
    st.lists(st.binary(max_size=80), max_size=4).map(tuple),
)
txouts = st.builds(TxOut, st.integers(0, 21_000_000 * 10**8), scripts)


@given(
    st.integers(-(2**31), 2**31 - 1),
    st.lists(txins, min_size=1, max_size=4),
    st.lists(txouts, min_size=1, max_size=4),
    st.integers(0, 2**32 - 1),
)
def test_serialize_parse_round_trip(version: int, ins: list[TxIn], outs: list[TxOut], locktime: int) -> None:
    tx = Transaction(version, tuple(ins), tuple(outs), locktime)
    assert Transaction.parse(tx.serialize()) == tx
    assert Transaction.parse(tx.serialize_legacy()).txid == tx.txid


def test_is_final_follows_bitcoin_core() -> None:
    txin = TxIn(OutPoint(bytes(32), 0), sequence=0xFFFFFFFE)
    out = (TxOut(1000, b"\x51"),)
    assert Transaction(2, (txin,), out, 0).is_final(0, 0)
    by_height = Transaction(2, (txin,), out, 100)
    assert not by_height.is_final(100, 2_000_000_000) and by_height.is_final(101, 0)
    by_time = Transaction(2, (txin,), out, 1_700_000_000)
    assert not by_time.is_final(10**6, 1_700_000_000) and by_time.is_final(0, 1_700_000_001)
    final_seq = Transaction(2, (TxIn(OutPoint(bytes(32), 0)),), out, 100)
    assert final_seq.is_final(0, 0)
