"""Spending a P2WPKH output with our own signer, checked by Bitcoin Core's interpreter."""

from __future__ import annotations

from protocol.bitcoin import OutPoint, PrivateKey, SighashCache, Transaction, TxIn, TxOut, p2wpkh_for, p2wpkh_witness
from tests.helpers.kernel import assert_invalid, assert_valid


def build(keys: list[PrivateKey], amounts: list[int]) -> tuple[Transaction, list[TxOut]]:
    spent = [TxOut(a, p2wpkh_for(k.public_key)) for k, a in zip(keys, amounts)]
    ins = tuple(TxIn(OutPoint(bytes([i + 1]) * 32, i), sequence=0xFFFFFFFD) for i in range(len(keys)))
    outs = (TxOut(sum(amounts) - 500, p2wpkh_for(PrivateKey.from_seed(b"dest").public_key)),)
    unsigned = Transaction(2, ins, outs, 0)
    cache = SighashCache.of(unsigned)
    witnesses = [p2wpkh_witness(unsigned, i, k, a, cache) for i, (k, a) in enumerate(zip(keys, amounts))]
    return unsigned.with_witnesses(witnesses), spent


def test_two_input_spend_verifies() -> None:
    tx, spent = build([PrivateKey.from_seed(b"a"), PrivateKey.from_seed(b"b")], [50_000, 70_000])
    assert_valid(tx, spent)
    assert tx.txid == Transaction(tx.version, tuple(i.with_witness(()) for i in tx.inputs), tx.outputs).txid


def test_wrong_amount_or_swapped_witnesses_fail() -> None:
    tx, spent = build([PrivateKey.from_seed(b"a"), PrivateKey.from_seed(b"b")], [50_000, 70_000])
    assert_invalid(tx, [TxOut(50_001, spent[0].script_pubkey), spent[1]], 0)
    swapped = tx.with_witnesses([tx.inputs[1].witness, tx.inputs[0].witness])
    assert_invalid(swapped, spent, 0)
    assert_invalid(swapped, spent, 1)
