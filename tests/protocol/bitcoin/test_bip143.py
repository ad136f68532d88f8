"""BIP 143 native P2WPKH and P2WSH examples (tests/vectors/bip143_*.json, source named inside)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.bitcoin import PrivateKey, PublicKey, SighashCache, Transaction, TxOut, segwit_v0_sighash
from tests.helpers.kernel import policy_problems, verify_input

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def load_cases() -> list[dict]:
    p2wpkh = json.loads((VECTORS / "bip143_native_p2wpkh.json").read_text())
    p2wsh = json.loads((VECTORS / "bip143_native_p2wsh.json").read_text())
    assert "BIP 143" in p2wpkh["source"] and "BIP 143" in p2wsh["source"]
    return [p2wpkh, *p2wsh["cases"]]


CASES = load_cases()


def spent(case: dict) -> list[TxOut]:
    return [TxOut(o["value"], bytes.fromhex(o["script_pubkey"])) for o in case["spent_outputs"]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["source"].rsplit(",", 1)[-1].strip()[:40])
def test_sighash_and_signature_match_bip143(case: dict) -> None:
    tx = Transaction.from_hex(case["unsigned_tx"])
    assert tx.hex() == case["unsigned_tx"]
    cache = SighashCache.of(tx)
    for sig in case["signatures"]:
        i = sig["input_index"]
        if "hash_prevouts" in sig:
            assert cache.prevouts.hex() == sig["hash_prevouts"]
        if "hash_sequence" in sig:
            assert cache.sequence.hex() == sig["hash_sequence"]
        if "hash_outputs" in sig and sig["sighash_type"] & 0x1F == 1:
            assert cache.outputs.hex() == sig["hash_outputs"]
        digest = segwit_v0_sighash(
            tx, i, bytes.fromhex(sig["script_code"]), case["spent_outputs"][i]["value"], sig["sighash_type"]
        )
        assert digest.hex() == sig["sighash"]
        key = PrivateKey(bytes.fromhex(sig["private_key"]))
        assert key.public_key == PublicKey.from_hex(sig["public_key"])
        # libsecp256k1 signs with RFC 6979 nonces, as the BIP's examples did.
        assert key.sign(digest).hex() == sig["signature"]
        assert key.public_key.verify(digest, bytes.fromhex(sig["signature"]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["source"].rsplit(",", 1)[-1].strip()[:40])
def test_signed_transaction_round_trips_and_verifies_with_bitcoin_core(case: dict) -> None:
    tx = Transaction.from_hex(case["signed_tx"])
    assert tx.hex() == case["signed_tx"]
    outs = spent(case)
    assert all(verify_input(tx, i, outs) for i in range(len(tx.inputs)))
    assert not [p for p in policy_problems(tx, outs) if "signature" in p or "key" in p]


def test_changed_amount_breaks_the_witness_signature() -> None:
    case = CASES[0]
    tx = Transaction.from_hex(case["signed_tx"])
    outs = spent(case)
    outs[1] = TxOut(outs[1].value - 1, outs[1].script_pubkey)
    assert not verify_input(tx, 1, outs)


def test_sighash_rejects_out_of_range_input() -> None:
    tx = Transaction.from_hex(CASES[0]["unsigned_tx"])
    with pytest.raises(IndexError):
        segwit_v0_sighash(tx, 2, b"", 0)


def test_oracle_range_checks_the_input_index() -> None:
    case = CASES[0]
    tx = Transaction.from_hex(case["signed_tx"])
    with pytest.raises(IndexError):
        verify_input(tx, 2, spent(case))
    with pytest.raises(ValueError):
        verify_input(tx, 0, spent(case)[:1])
