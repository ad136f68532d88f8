"""BIP 143 signature hashing for version 0 witness programs.

The digest is double-SHA-256 of: version, hashPrevouts, hashSequence, the
spent outpoint, scriptCode, amount, nSequence, hashOutputs, locktime and the
sighash type (BIP 143 "Specification").  :class:`SighashCache` keeps the three
transaction-wide hashes so signing many inputs, or re-signing a commitment
whose outputs changed, does not rehash everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.bitcoin.keys import PrivateKey
from protocol.bitcoin.script import p2wpkh_script_code
from protocol.bitcoin.serialize import hash256, i64, u32, var_bytes
from protocol.bitcoin.tx import Transaction, TxOut

SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
_ZERO32 = bytes(32)


def hash_prevouts(tx: Transaction) -> bytes:
    return hash256(b"".join(txin.outpoint.serialize() for txin in tx.inputs))


def hash_sequence(tx: Transaction) -> bytes:
    return hash256(b"".join(u32(txin.sequence) for txin in tx.inputs))


def hash_outputs(outputs: tuple[TxOut, ...]) -> bytes:
    return hash256(b"".join(txout.serialize() for txout in outputs))


@dataclass(frozen=True, slots=True)
class SighashCache:
    """The transaction-wide BIP 143 hashes of one transaction."""

    prevouts: bytes
    sequence: bytes
    outputs: bytes

    @classmethod
    def of(cls, tx: Transaction) -> SighashCache:
        return cls(hash_prevouts(tx), hash_sequence(tx), hash_outputs(tx.outputs))


def segwit_v0_sighash(
    tx: Transaction,
    input_index: int,
    script_code: bytes,
    amount: int,
    sighash_type: int = SIGHASH_ALL,
    cache: SighashCache | None = None,
) -> bytes:
    """The BIP 143 digest that a signature on input ``input_index`` signs.

    Args:
        script_code: the scriptCode *without* its length prefix: for P2WPKH
            :func:`protocol.bitcoin.script.p2wpkh_script_code`, for P2WSH the
            witness script (after the last executed OP_CODESEPARATOR).
        amount: value in satoshis of the output being spent.
        sighash_type: the full 32-bit hash type (its low byte is appended to
            the signature).
    """
    if not 0 <= input_index < len(tx.inputs):
        raise IndexError(f"input index {input_index} out of range")
    base = sighash_type & 0x1F
    anyone_can_pay = bool(sighash_type & SIGHASH_ANYONECANPAY)
    if cache is None:
        cache = SighashCache.of(tx)
    prevouts = _ZERO32 if anyone_can_pay else cache.prevouts
    if anyone_can_pay or base in (SIGHASH_SINGLE, SIGHASH_NONE):
        sequence = _ZERO32
    else:
        sequence = cache.sequence
    if base not in (SIGHASH_SINGLE, SIGHASH_NONE):
        outputs = cache.outputs
    elif base == SIGHASH_SINGLE and input_index < len(tx.outputs):
        outputs = hash256(tx.outputs[input_index].serialize())
    else:
        outputs = _ZERO32
    txin = tx.inputs[input_index]
    preimage = b"".join(
        (
            u32(tx.version & 0xFFFFFFFF),
            prevouts,
            sequence,
            txin.outpoint.serialize(),
            var_bytes(script_code),
            i64(amount),
            u32(txin.sequence),
            outputs,
            u32(tx.locktime),
            u32(sighash_type & 0xFFFFFFFF),
        )
    )
    return hash256(preimage)


def p2wpkh_witness(
    tx: Transaction,
    input_index: int,
    key: PrivateKey,
    amount: int,
    cache: SighashCache | None = None,
) -> tuple[bytes, bytes]:
    """The witness ``[signature+SIGHASH_ALL, pubkey]`` spending a P2WPKH output of ``key``.

    Put it in place with :meth:`Transaction.with_witnesses`; the txid does
    not change, so inputs can be signed in any order.
    """
    pub = key.public_key
    digest = segwit_v0_sighash(tx, input_index, p2wpkh_script_code(pub.hash160()), amount, SIGHASH_ALL, cache)
    return key.sign(digest) + bytes((SIGHASH_ALL,)), pub.data
