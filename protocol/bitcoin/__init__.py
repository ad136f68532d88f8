"""mu's Bitcoin layer: transactions, scripts, keys, addresses and the payment channel.

Pure code (no I/O); every transaction built here is checked in tests by
Bitcoin Core's consensus code through libbitcoinkernel.  See
``specs/payments.md``.  The names below are the stable public surface.
"""

from protocol.bitcoin.bech32 import NETWORK_HRPS, decode_address, encode_address
from protocol.bitcoin.errors import (
    AddressError,
    BadKeyError,
    BitcoinError,
    DecodeError,
    LocalBitcoinError,
    RemoteBitcoinError,
)
from protocol.bitcoin.keys import PrivateKey, PublicKey, hash160, is_low_s, is_strict_der
from protocol.bitcoin.policy import (
    DUST_RELAY_FEE_PER_KVB,
    MIN_FEE_RATE,
    MIN_RELAY_FEE_PER_KVB,
    P2WPKH_DUST,
    dust_threshold,
    is_dust,
    min_relay_fee,
    standardness_problems,
)
from protocol.bitcoin.script import (
    channel_script,
    output_type,
    p2wpkh_for,
    p2wpkh_script,
    p2wpkh_script_code,
    p2wsh_script,
    parse_pushes,
    push_data,
    push_int,
    script_num,
    witness_program,
)
from protocol.bitcoin.serialize import MAX_COMPACT_SIZE, Reader, compact_size, hash256, sha256, var_bytes
from protocol.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_NONE,
    SIGHASH_SINGLE,
    SighashCache,
    p2wpkh_witness,
    segwit_v0_sighash,
)
from protocol.bitcoin.tx import MAX_MONEY, MAX_TX_SIZE, SEQUENCE_FINAL, OutPoint, Transaction, TxIn, TxOut

__all__ = [
    "AddressError",
    "BadKeyError",
    "BitcoinError",
    "DUST_RELAY_FEE_PER_KVB",
    "DecodeError",
    "LocalBitcoinError",
    "MAX_COMPACT_SIZE",
    "MAX_MONEY",
    "MAX_TX_SIZE",
    "MIN_FEE_RATE",
    "MIN_RELAY_FEE_PER_KVB",
    "NETWORK_HRPS",
    "OutPoint",
    "P2WPKH_DUST",
    "PrivateKey",
    "PublicKey",
    "Reader",
    "RemoteBitcoinError",
    "SEQUENCE_FINAL",
    "SIGHASH_ALL",
    "SIGHASH_ANYONECANPAY",
    "SIGHASH_NONE",
    "SIGHASH_SINGLE",
    "SighashCache",
    "Transaction",
    "TxIn",
    "TxOut",
    "channel_script",
    "compact_size",
    "decode_address",
    "dust_threshold",
    "encode_address",
    "hash160",
    "hash256",
    "is_dust",
    "is_low_s",
    "is_strict_der",
    "min_relay_fee",
    "output_type",
    "p2wpkh_for",
    "p2wpkh_script",
    "p2wpkh_script_code",
    "p2wpkh_witness",
    "p2wsh_script",
    "parse_pushes",
    "push_data",
    "push_int",
    "script_num",
    "segwit_v0_sighash",
    "sha256",
    "standardness_problems",
    "var_bytes",
    "witness_program",
]
