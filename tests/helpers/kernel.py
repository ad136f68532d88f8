"""Test oracle: Bitcoin Core's script interpreter (libbitcoinkernel via pbk) plus mu's policy checks.

Use :func:`assert_valid` / :func:`assert_invalid` on every transaction mu
builds.  pbk 0.1.0a5 has three traps this module hides:

* an input index outside the transaction aborts the whole process inside
  the C library, so the index is range-checked here first;
* with ``ScriptVerificationFlags.ALL`` (which includes TAPROOT) pbk raises
  unless it gets ``PrecomputedTransactionData`` built from *every* spent
  output, so we always build it;
* a script that fails returns ``False`` (0) rather than raising.

pbk checks consensus only.  :func:`policy_problems` adds the relay-policy
rules mu promises (``specs/payments.md`` §6): low-S strict-DER signatures
with a defined sighash type, minimal OP_IF arguments (MINIMALIF), compressed
keys, standard output types and no dust outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pbk

from protocol.bitcoin import Transaction, TxOut, is_low_s, is_strict_der, parse_pushes, sha256, standardness_problems
from protocol.bitcoin.script import OP_IF, output_type, witness_program
from protocol.bitcoin.policy import MAX_STANDARD_P2WSH_SCRIPT_SIZE, MAX_STANDARD_P2WSH_STACK_ITEM_SIZE

ALL_FLAGS = pbk.ScriptVerificationFlags.ALL
_DEFINED_SIGHASH_TYPES = {0x01, 0x02, 0x03, 0x81, 0x82, 0x83}


def _kernel_outputs(spent_outputs: Sequence[TxOut]) -> list[pbk.TransactionOutput]:
    return [pbk.TransactionOutput(pbk.ScriptPubkey(o.script_pubkey), o.value) for o in spent_outputs]


def verify_input(tx: Transaction, index: int, spent_outputs: Sequence[TxOut]) -> bool:
    """True if input ``index`` of ``tx`` satisfies its spent output under Bitcoin Core's consensus rules."""
    if len(spent_outputs) != len(tx.inputs):
        raise ValueError(f"need {len(tx.inputs)} spent outputs, got {len(spent_outputs)}")
    if not 0 <= index < len(tx.inputs):
        # pbk would abort the interpreter process on an out-of-range index.
        raise IndexError(f"input index {index} out of range for {len(tx.inputs)} inputs")
    ktx = pbk.Transaction(tx.serialize())
    kouts = _kernel_outputs(spent_outputs)
    precomputed = pbk.script.PrecomputedTransactionData(ktx, kouts)
    spent = spent_outputs[index]
    return bool(
        pbk.ScriptPubkey(spent.script_pubkey).verify(spent.value, ktx, precomputed, index, ALL_FLAGS)
    )


def verify_all(tx: Transaction, spent_outputs: Sequence[TxOut]) -> bool:
    """True if every input of ``tx`` passes consensus script verification."""
    return all(verify_input(tx, i, spent_outputs) for i in range(len(tx.inputs)))


def _signature_problems(where: str, item: bytes) -> list[str]:
    if not item:
        return []
    sig, hashtype = item[:-1], item[-1]
    if not is_strict_der(sig):
        return [f"{where}: signature is not strict DER"]
    problems = []
    if not is_low_s(sig):
        problems.append(f"{where}: signature has high S")
    if hashtype not in _DEFINED_SIGHASH_TYPES:
        problems.append(f"{where}: undefined sighash type {hashtype:#x}")
    return problems


def _looks_like_signature(item: bytes) -> bool:
    return 9 <= len(item) <= 73 and item[0] == 0x30


def witness_problems(tx: Transaction, spent_outputs: Sequence[TxOut]) -> list[str]:
    """Input-side policy problems: signature encoding, MINIMALIF, key compression, sizes."""
    problems: list[str] = []
    for i, (txin, spent) in enumerate(zip(tx.inputs, spent_outputs)):
        kind = output_type(spent.script_pubkey)
        where = f"input {i}"
        if kind == "p2wpkh":
            if len(txin.witness) != 2:
                problems.append(f"{where}: P2WPKH witness must have 2 items")
                continue
            problems += _signature_problems(where, txin.witness[0])
            key = txin.witness[1]
            if len(key) != 33 or key[0] not in (2, 3):
                problems.append(f"{where}: public key is not compressed")
        elif kind == "p2wsh":
            if not txin.witness:
                problems.append(f"{where}: empty P2WSH witness")
                continue
            script, stack = txin.witness[-1], txin.witness[:-1]
            prog = witness_program(spent.script_pubkey)
            if prog is None or sha256(script) != prog[1]:
                problems.append(f"{where}: witness script does not match the program")
            if len(script) > MAX_STANDARD_P2WSH_SCRIPT_SIZE:
                problems.append(f"{where}: witness script too large")
            for item in stack:
                if len(item) > MAX_STANDARD_P2WSH_STACK_ITEM_SIZE:
                    problems.append(f"{where}: witness item of {len(item)} bytes")
                if _looks_like_signature(item):
                    problems += _signature_problems(where, item)
            ops = parse_pushes(script)
            # MINIMALIF: the item an opening OP_IF consumes must be empty or 0x01.
            if ops and ops[0] == OP_IF and stack and stack[-1] not in (b"", b"\x01"):
                problems.append(f"{where}: OP_IF argument is not minimal")
            for op in ops:
                if isinstance(op, bytes) and len(op) in (33, 65) and op[0] in (2, 3, 4, 6, 7):
                    if len(op) != 33 or op[0] not in (2, 3):
                        problems.append(f"{where}: script uses an uncompressed key")
        elif txin.witness:
            problems.append(f"{where}: witness on a non-witness spend")
    return problems


def policy_problems(tx: Transaction, spent_outputs: Sequence[TxOut]) -> list[str]:
    """All policy problems mu checks: outputs (type, dust) and witnesses."""
    return standardness_problems(tx) + witness_problems(tx, spent_outputs)


def assert_valid(tx: Transaction, spent_outputs: Sequence[TxOut], *, standard: bool = True) -> None:
    """Fail the test unless every input verifies (and, by default, the policy checks pass)."""
    for i in range(len(tx.inputs)):
        assert verify_input(tx, i, spent_outputs), f"input {i} fails Bitcoin Core script verification"
    if standard:
        problems = policy_problems(tx, spent_outputs)
        assert not problems, problems
    # Round trip: the bytes we hand to Core are the bytes our parser reads back.
    assert Transaction.parse(tx.serialize()) == tx


def assert_invalid(tx: Transaction, spent_outputs: Sequence[TxOut], index: int = 0) -> None:
    """Fail the test if input ``index`` passes consensus verification."""
    assert not verify_input(tx, index, spent_outputs), f"input {index} unexpectedly verifies"
