"""Bitcoin Core's relay policy numbers that mu's transactions must meet.

Consensus lets through transactions that no node relays; these rules keep
every commitment, close and refund relayable (``specs/payments.md`` §6 Relay policy kept by mu):

* Dust: Bitcoin Core ``GetDustThreshold`` (src/policy/policy.cpp) prices
  the output plus the input that would later spend it at the dust relay fee
  ``DUST_RELAY_TX_FEE`` = 3,000 sat/kvB (src/policy/policy.h).  A witness
  program output is charged its serialized size + 67 vbytes (32+4+1 outpoint
  and sequence, 107/4 witness, 4), anything else + 148.  P2WPKH: 31+67 = 98
  vB -> 294 sat; P2WSH: 43+67 = 110 vB -> 330 sat; P2PKH: 34+148 -> 546 sat.
* Minimum relay fee: ``DEFAULT_MIN_RELAY_TX_FEE`` = 1,000 sat/kvB
  (1 sat/vB, src/policy/policy.h up to Bitcoin Core 28; later releases lower
  it, so 1 sat/vB stays relayable everywhere).  mu fee rates are whole sat/vB
  and at least :data:`MIN_FEE_RATE`.
"""

from __future__ import annotations

from protocol.bitcoin.script import output_type, witness_program
from protocol.bitcoin.tx import Transaction, TxOut

DUST_RELAY_FEE_PER_KVB = 3_000
MIN_RELAY_FEE_PER_KVB = 1_000
MIN_FEE_RATE = 1  # sat/vB: MIN_RELAY_FEE_PER_KVB / 1000
# Fee rates above this are refused at channel open as a likely unit mistake
# (sat/kvB given for sat/vB).
MAX_FEE_RATE = 10_000
STANDARD_OUTPUT_TYPES = frozenset({"p2wpkh", "p2wsh", "p2tr", "p2pkh", "p2sh"})
# Largest witness stack item for P2WSH spends under Bitcoin Core policy
# (MAX_STANDARD_P2WSH_STACK_ITEM_SIZE) and largest witness script
# (MAX_STANDARD_P2WSH_SCRIPT_SIZE).
MAX_STANDARD_P2WSH_STACK_ITEM_SIZE = 80
MAX_STANDARD_P2WSH_SCRIPT_SIZE = 3_600


def _fee_per_kvb(rate_per_kvb: int, vbytes: int) -> int:
    # CFeeRate::GetFee rounds up (ceiling division) in current Bitcoin Core.
    return -(-rate_per_kvb * vbytes // 1000)


def dust_threshold(script_pubkey: bytes, dust_relay_fee_per_kvb: int = DUST_RELAY_FEE_PER_KVB) -> int:
    """Smallest non-dust value for an output paying ``script_pubkey``."""
    size = len(TxOut(0, script_pubkey).serialize())  # 8-byte value + script with length
    size += 67 if witness_program(script_pubkey) is not None else 148
    return _fee_per_kvb(dust_relay_fee_per_kvb, size)


P2WPKH_DUST = dust_threshold(b"\x00\x14" + bytes(20))  # 294 sat


def is_dust(txout: TxOut) -> bool:
    """True if Bitcoin Core would refuse to relay ``txout`` as dust (OP_RETURN excepted)."""
    if output_type(txout.script_pubkey) == "nulldata":
        return False
    return txout.value < dust_threshold(txout.script_pubkey)


def min_relay_fee(vsize: int) -> int:
    """The minimum fee for a transaction of ``vsize`` vbytes at the default relay fee."""
    return _fee_per_kvb(MIN_RELAY_FEE_PER_KVB, vsize)


def standardness_problems(tx: Transaction) -> list[str]:
    """Output-side relay-policy violations of ``tx`` (empty list when it is fine)."""
    problems = []
    if tx.version not in (1, 2, 3):
        problems.append(f"non-standard version {tx.version}")
    for i, txout in enumerate(tx.outputs):
        kind = output_type(txout.script_pubkey)
        if kind not in STANDARD_OUTPUT_TYPES and kind != "nulldata":
            problems.append(f"output {i} has non-standard type {kind}")
        elif is_dust(txout):
            problems.append(f"output {i} is dust ({txout.value} sat)")
    return problems
