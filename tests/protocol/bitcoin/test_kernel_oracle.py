"""The pbk oracle itself: it must catch what consensus allows but policy forbids, and fail bad scripts."""

from __future__ import annotations

from protocol.bitcoin import (
    OutPoint,
    PrivateKey,
    SighashCache,
    Transaction,
    TxIn,
    TxOut,
    p2wpkh_for,
    p2wpkh_witness,
    p2wsh_script,
    push_data,
)
from tests.helpers.kernel import policy_problems, verify_input
from tests.protocol.bitcoin.test_keys import high_s

KEY = PrivateKey.from_seed(b"oracle")


def spend(outputs: tuple[TxOut, ...]) -> tuple[Transaction, list[TxOut]]:
    spent = [TxOut(100_000, p2wpkh_for(KEY.public_key))]
    tx = Transaction(2, (TxIn(OutPoint(b"\x07" * 32, 0)),), outputs)
    return tx.with_witnesses([p2wpkh_witness(tx, 0, KEY, 100_000, SighashCache.of(tx))]), spent


def test_clean_spend_has_no_problems() -> None:
    tx, spent = spend((TxOut(90_000, p2wpkh_for(KEY.public_key)),))
    assert verify_input(tx, 0, spent)
    assert policy_problems(tx, spent) == []


def test_high_s_passes_consensus_but_not_policy() -> None:
    tx, spent = spend((TxOut(90_000, p2wpkh_for(KEY.public_key)),))
    sig, pub = tx.inputs[0].witness
    malleated = tx.with_witnesses([(high_s(sig[:-1]) + sig[-1:], pub)])
    assert malleated.txid == tx.txid
    assert verify_input(malleated, 0, spent)  # LOW_S is policy, not consensus
    assert any("high S" in p for p in policy_problems(malleated, spent))


def test_dust_and_nonstandard_outputs_are_reported() -> None:
    tx, spent = spend((TxOut(293, p2wpkh_for(KEY.public_key)), TxOut(1_000, b"\x51")))
    problems = policy_problems(tx, spent)
    assert any("dust" in p for p in problems)
    assert any("non-standard type" in p for p in problems)


def test_uncompressed_key_in_witness_script_is_reported() -> None:
    uncompressed = KEY._key.public_key.format(compressed=False)
    script = push_data(uncompressed) + b"\xac"
    spent = [TxOut(50_000, p2wsh_script(script))]
    tx = Transaction(2, (TxIn(OutPoint(b"\x08" * 32, 0)),), (TxOut(40_000, p2wpkh_for(KEY.public_key)),))
    tx = tx.with_witnesses([(b"\x30" + bytes(8), script)])
    assert any("uncompressed" in p for p in policy_problems(tx, spent))


def test_failed_script_returns_false_not_an_exception() -> None:
    tx, spent = spend((TxOut(90_000, p2wpkh_for(KEY.public_key)),))
    other = [TxOut(100_000, p2wpkh_for(PrivateKey.from_seed(b"someone").public_key))]
    assert verify_input(tx, 0, other) is False
