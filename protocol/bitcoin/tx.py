"""Immutable Bitcoin transactions with segwit serialization (BIP 141 / BIP 144).

``Transaction.serialize()`` writes the witness form (marker 0x00, flag 0x01)
whenever any input carries a witness and the legacy form otherwise;
``Transaction.parse(data)`` accepts exactly those two forms and rejects
trailing bytes, non-minimal CompactSizes, superfluous witness markers, empty
input or output lists and out-of-range amounts (``specs/payments.md`` §3 Serialization).
Hashes are ``bytes`` in internal order; ``*_hex()`` helpers give the
reversed display order used by block explorers and bitcoind's RPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from protocol.bitcoin.errors import DecodeError
from protocol.bitcoin.serialize import Reader, compact_size, hash256, i64, u32, var_bytes

# Consensus limits (Bitcoin Core consensus/amount.h, consensus/consensus.h).
MAX_MONEY = 21_000_000 * 100_000_000
MAX_BLOCK_WEIGHT = 4_000_000
# A serialized transaction we parse may be at most this long: the policy
# weight limit MAX_STANDARD_TX_WEIGHT (400,000 WU) bounds any standard tx's
# total size, and nothing mu handles comes near it.
MAX_TX_SIZE = 400_000
SEQUENCE_FINAL = 0xFFFFFFFF
LOCKTIME_THRESHOLD = 500_000_000  # below: block height; at or above: Unix time
# Smallest possible encodings, used to reject absurd counts before allocating.
_MIN_TXIN_SIZE = 32 + 4 + 1 + 4
_MIN_TXOUT_SIZE = 8 + 1


@dataclass(frozen=True, slots=True)
class OutPoint:
    """Reference to output ``index`` of the transaction with ``txid`` (internal byte order)."""

    txid: bytes
    index: int

    def __post_init__(self) -> None:
        if len(self.txid) != 32:
            raise ValueError("txid must be 32 bytes")
        if not 0 <= self.index <= 0xFFFFFFFF:
            raise ValueError("output index out of uint32 range")

    @classmethod
    def from_hex(cls, txid_display_hex: str, index: int) -> OutPoint:
        """Build from a txid as shown by explorers/RPC (display order)."""
        return cls(bytes.fromhex(txid_display_hex)[::-1], index)

    def txid_hex(self) -> str:
        return self.txid[::-1].hex()

    def serialize(self) -> bytes:
        return self.txid + u32(self.index)

    def __str__(self) -> str:
        return f"{self.txid_hex()}:{self.index}"


@dataclass(frozen=True, slots=True)
class TxIn:
    """A transaction input; ``witness`` is its BIP 141 witness stack (bottom first)."""

    outpoint: OutPoint
    script_sig: bytes = b""
    sequence: int = SEQUENCE_FINAL
    witness: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.sequence <= 0xFFFFFFFF:
            raise ValueError("sequence out of uint32 range")
        if not isinstance(self.witness, tuple):
            object.__setattr__(self, "witness", tuple(self.witness))

    def serialize(self) -> bytes:
        """The input without its witness (witnesses are written after all outputs)."""
        return self.outpoint.serialize() + var_bytes(self.script_sig) + u32(self.sequence)

    def with_witness(self, witness: tuple[bytes, ...]) -> TxIn:
        return TxIn(self.outpoint, self.script_sig, self.sequence, tuple(witness))


@dataclass(frozen=True, slots=True)
class TxOut:
    """An output paying ``value`` satoshis to ``script_pubkey``."""

    value: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.value <= MAX_MONEY:
            raise ValueError(f"output value {self.value} outside [0, MAX_MONEY]")

    def serialize(self) -> bytes:
        return i64(self.value) + var_bytes(self.script_pubkey)


def _serialize_witness(stack: tuple[bytes, ...]) -> bytes:
    return compact_size(len(stack)) + b"".join(var_bytes(item) for item in stack)


@dataclass(frozen=True, slots=True)
class Transaction:
    """An immutable transaction; equality is equality of the serialized bytes."""

    version: int
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    locktime: int = 0
    _txid: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, tuple):
            object.__setattr__(self, "inputs", tuple(self.inputs))
        if not isinstance(self.outputs, tuple):
            object.__setattr__(self, "outputs", tuple(self.outputs))
        if not -(2**31) <= self.version < 2**31:
            raise ValueError("version out of int32 range")
        if not 0 <= self.locktime <= 0xFFFFFFFF:
            raise ValueError("locktime out of uint32 range")

    @property
    def has_witness(self) -> bool:
        return any(txin.witness for txin in self.inputs)

    def serialize_legacy(self) -> bytes:
        """Serialization without witness data (what the txid commits to)."""
        return b"".join(
            (
                u32(self.version & 0xFFFFFFFF),
                compact_size(len(self.inputs)),
                *(txin.serialize() for txin in self.inputs),
                compact_size(len(self.outputs)),
                *(txout.serialize() for txout in self.outputs),
                u32(self.locktime),
            )
        )

    def serialize(self) -> bytes:
        """BIP 144 serialization: witness form if any input has a witness."""
        if not self.has_witness:
            return self.serialize_legacy()
        return b"".join(
            (
                u32(self.version & 0xFFFFFFFF),
                b"\x00\x01",
                compact_size(len(self.inputs)),
                *(txin.serialize() for txin in self.inputs),
                compact_size(len(self.outputs)),
                *(txout.serialize() for txout in self.outputs),
                *(_serialize_witness(txin.witness) for txin in self.inputs),
                u32(self.locktime),
            )
        )

    @property
    def txid(self) -> bytes:
        """double-SHA-256 of the legacy serialization, internal byte order."""
        if self._txid is None:
            object.__setattr__(self, "_txid", hash256(self.serialize_legacy()))
        assert self._txid is not None
        return self._txid

    @property
    def wtxid(self) -> bytes:
        """double-SHA-256 of the witness serialization (BIP 141), internal byte order."""
        return hash256(self.serialize())

    def txid_hex(self) -> str:
        """txid in display order (as bitcoind prints it)."""
        return self.txid[::-1].hex()

    def wtxid_hex(self) -> str:
        return self.wtxid[::-1].hex()

    def weight(self) -> int:
        """BIP 141 weight: base size * 3 + total size."""
        return len(self.serialize_legacy()) * 3 + len(self.serialize())

    def vsize(self) -> int:
        """Virtual size in vbytes: weight / 4 rounded up."""
        return (self.weight() + 3) // 4

    def is_final(self, block_height: int, block_time: int) -> bool:
        """Bitcoin Core's ``IsFinalTx``: may this transaction be in a block at ``block_height``?

        nLockTime below 500,000,000 is a height, otherwise a Unix time
        compared with ``block_time`` (median time past under BIP 113).  A
        locktime is satisfied when it is *below* the block's value, so a
        refund with nLockTime = expiry is first valid at height expiry + 1.
        All-final sequences disable the lock.
        """
        if self.locktime == 0:
            return True
        limit = block_height if self.locktime < LOCKTIME_THRESHOLD else block_time
        if self.locktime < limit:
            return True
        return all(txin.sequence == SEQUENCE_FINAL for txin in self.inputs)

    def with_witnesses(self, witnesses: Sequence[tuple[bytes, ...]]) -> Transaction:
        """A copy with input ``i`` given ``witnesses[i]`` (txid unchanged)."""
        if len(witnesses) != len(self.inputs):
            raise ValueError("one witness stack per input is required")
        ins = tuple(txin.with_witness(w) for txin, w in zip(self.inputs, witnesses))
        return Transaction(self.version, ins, self.outputs, self.locktime)

    def hex(self) -> str:
        return self.serialize().hex()

    @classmethod
    def from_hex(cls, text: str) -> Transaction:
        try:
            data = bytes.fromhex(text)
        except ValueError as exc:
            raise DecodeError("transaction hex is invalid") from exc
        return cls.parse(data)

    @classmethod
    def parse(cls, data: bytes) -> Transaction:
        """Decode one transaction occupying all of ``data``.

        Raises:
            DecodeError: truncated, oversized, non-minimal, trailing bytes,
                superfluous witness flag, no inputs/outputs, bad amounts.
        """
        if len(data) > MAX_TX_SIZE:
            raise DecodeError(f"transaction of {len(data)} bytes exceeds {MAX_TX_SIZE}")
        r = Reader(data)
        tx = cls.read_from(r)
        r.finish()
        return tx

    @classmethod
    def read_from(cls, r: Reader) -> Transaction:
        """Decode one transaction from a reader positioned at its start (block parsing)."""
        version = r.u32()
        if version >= 2**31:
            version -= 2**32
        segwit = False
        if r.peek(1) == b"\x00":
            marker_flag = r.read(2)
            if marker_flag != b"\x00\x01":
                raise DecodeError("unknown segwit marker/flag (expected 00 01)")
            segwit = True
        n_in = r.count(_MIN_TXIN_SIZE)
        if n_in == 0:
            raise DecodeError("transaction has no inputs")
        raw_ins = []
        for _ in range(n_in):
            outpoint = OutPoint(r.read(32), r.u32())
            script_sig = r.var_bytes()
            raw_ins.append((outpoint, script_sig, r.u32()))
        n_out = r.count(_MIN_TXOUT_SIZE)
        if n_out == 0:
            raise DecodeError("transaction has no outputs")
        outs = []
        for _ in range(n_out):
            value = r.i64()
            if not 0 <= value <= MAX_MONEY:
                raise DecodeError(f"output value {value} outside [0, MAX_MONEY]")
            outs.append(TxOut(value, r.var_bytes()))
        witnesses: list[tuple[bytes, ...]] = [()] * n_in
        if segwit:
            for i in range(n_in):
                n_items = r.count(1)
                witnesses[i] = tuple(r.var_bytes() for _ in range(n_items))
            if not any(witnesses):
                # Bitcoin Core: "Superfluous witness record".
                raise DecodeError("witness flag set but every witness is empty")
        locktime = r.u32()
        ins = tuple(TxIn(op, sig, seq, w) for (op, sig, seq), w in zip(raw_ins, witnesses))
        return cls(version, ins, tuple(outs), locktime)
