"""Regtest block construction: header, merkle roots, coinbase, proof of work.

Pure code (no I/O, no clock): the miner in ``node/chain`` passes the time,
the previous block and the transactions in, and gets block bytes out.  The
kernel (libbitcoinkernel) is the judge of validity; this module only builds
blocks that Bitcoin Core's rules accept.  Byte layouts are in
``specs/chain.md`` §3 Blocks the miner builds.

Sources for the rules reproduced here:
  * block header layout and double-SHA256 block hash: the Bitcoin protocol;
  * BIP 34: the coinbase scriptSig starts with the block height, pushed as
    a CScriptNum exactly as ``CScript() << height`` would (OP_0, OP_1..OP_16
    for small heights, else a minimal little-endian push);
  * BIP 141 "Commitment structure": an output whose script is
    ``OP_RETURN 0x24 aa21a9ed <SHA256d(witness root || reserved)>`` and a
    coinbase witness of one 32-byte reserved value;
  * regtest subsidy: 50 BTC halving every 150 blocks (chainparams.cpp).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

HEADER_SIZE = 80
#: BIP 9 "top bits" version our miner signals with (no deployments).
BLOCK_VERSION = 0x20000000
#: The regtest proof-of-work limit in compact form (chainparams.cpp).
REGTEST_BITS = 0x207FFFFF
COIN = 100_000_000
REGTEST_HALVING_INTERVAL = 150
INITIAL_SUBSIDY = 50 * COIN
#: The coinbase scriptSig must be 2..100 bytes (CheckTransaction, "bad-cb-length").
COINBASE_SCRIPTSIG_MIN = 2
COINBASE_SCRIPTSIG_MAX = 100
#: BIP 141 witness commitment header: OP_RETURN, push 36, magic aa21a9ed.
WITNESS_COMMITMENT_HEADER = bytes.fromhex("6a24aa21a9ed")
WITNESS_RESERVED_VALUE = bytes(32)
#: Nonce tries before giving up; at nBits 0x207fffff half of all hashes win.
MAX_NONCE_TRIES = 1 << 20
NULL_HASH = bytes(32)


class BlockBuildError(ValueError):
    """The requested block cannot be built (bad height, oversize push, ...)."""


def sha256d(data: bytes) -> bytes:
    """Bitcoin's hash: SHA-256 applied twice."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def compact_size(n: int) -> bytes:
    """Bitcoin's CompactSize length prefix for ``n``."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def bits_to_target(bits: int) -> int:
    """Expand a compact nBits value into the 256-bit target."""
    exponent = bits >> 24
    mantissa = bits & 0x007FFFFF
    if exponent <= 3:
        return mantissa >> (8 * (3 - exponent))
    return mantissa << (8 * (exponent - 3))


def block_subsidy(height: int) -> int:
    """The regtest block subsidy in satoshis at ``height``."""
    halvings = height // REGTEST_HALVING_INTERVAL
    if halvings >= 64:
        return 0
    return INITIAL_SUBSIDY >> halvings


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockHeader:
    """An 80-byte block header.  Hashes are in internal (little-endian) order."""

    version: int
    prev_hash: bytes
    merkle_root: bytes
    time: int
    bits: int
    nonce: int

    def __post_init__(self) -> None:
        if len(self.prev_hash) != 32 or len(self.merkle_root) != 32:
            raise BlockBuildError("header hashes must be 32 bytes")
        for name in ("time", "bits", "nonce"):
            if not 0 <= getattr(self, name) <= 0xFFFFFFFF:
                raise BlockBuildError(f"header {name} out of range")

    def serialize(self) -> bytes:
        return struct.pack(
            "<i32s32sIII", self.version, self.prev_hash, self.merkle_root,
            self.time, self.bits, self.nonce,
        )

    @classmethod
    def parse(cls, data: bytes) -> BlockHeader:
        """Parse exactly 80 header bytes."""
        if len(data) != HEADER_SIZE:
            raise BlockBuildError(f"a block header is {HEADER_SIZE} bytes, got {len(data)}")
        version, prev, root, time, bits, nonce = struct.unpack("<i32s32sIII", data)
        return cls(version=version, prev_hash=prev, merkle_root=root, time=time, bits=bits, nonce=nonce)

    def hash(self) -> bytes:
        """The block hash in internal byte order."""
        return sha256d(self.serialize())

    def hash_hex(self) -> str:
        """The block hash as RPC shows it (byte-reversed hex)."""
        return self.hash()[::-1].hex()


def merkle_root(hashes: list[bytes]) -> bytes:
    """The Bitcoin merkle root of txids (or wtxids), duplicating odd tails."""
    if not hashes:
        raise BlockBuildError("a merkle tree needs at least one leaf")
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [sha256d(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def witness_commitment(wtxids: list[bytes]) -> bytes:
    """BIP 141 commitment over the block's non-coinbase wtxids.

    The coinbase's wtxid counts as 32 zero bytes (BIP 141 "Commitment
    structure"), so callers pass only the other transactions' wtxids.
    """
    root = merkle_root([NULL_HASH, *wtxids])
    return sha256d(root + WITNESS_RESERVED_VALUE)


def script_num_push(n: int) -> bytes:
    """Push ``n`` the way ``CScript() << n`` does (BIP 34 height encoding)."""
    if n < 0:
        raise BlockBuildError("block heights are not negative")
    if n == 0:
        return b"\x00"
    if n <= 16:
        return bytes([0x50 + n])
    body = bytearray()
    while n:
        body.append(n & 0xFF)
        n >>= 8
    if body[-1] & 0x80:
        body.append(0)  # keep the number positive (CScriptNum sign bit)
    return bytes([len(body)]) + bytes(body)


def coinbase_script_sig(height: int, extra_nonce: bytes) -> bytes:
    """BIP 34 height push followed by a push of ``extra_nonce`` (2..100 bytes total)."""
    if not 1 <= len(extra_nonce) <= 75:
        raise BlockBuildError("extra nonce must be 1..75 bytes")
    script = script_num_push(height) + bytes([len(extra_nonce)]) + extra_nonce
    if not COINBASE_SCRIPTSIG_MIN <= len(script) <= COINBASE_SCRIPTSIG_MAX:
        raise BlockBuildError("coinbase scriptSig must be 2..100 bytes")
    return script


@dataclass(frozen=True, slots=True)
class Coinbase:
    """A serialized coinbase with its ids (internal byte order)."""

    raw: bytes
    txid: bytes


def build_coinbase(
    *, height: int, script_pubkey: bytes, value: int, extra_nonce: bytes, commitment: bytes
) -> Coinbase:
    """Serialize the coinbase transaction (BIP 144 segwit form).

    One input spending the null outpoint with the BIP 34 scriptSig, the
    payout output, the BIP 141 commitment output, and the reserved value as
    the input's witness.  ``specs/chain.md`` §3.2 Coinbase transaction gives the byte layout.
    """
    if value < 0:
        raise BlockBuildError("coinbase value is negative")
    if len(commitment) != 32:
        raise BlockBuildError("witness commitment must be 32 bytes")
    script_sig = coinbase_script_sig(height, extra_nonce)
    version = struct.pack("<i", 2)
    tx_in = (
        compact_size(1) + NULL_HASH + b"\xff\xff\xff\xff"
        + compact_size(len(script_sig)) + script_sig + b"\xff\xff\xff\xff"
    )
    commit_script = WITNESS_COMMITMENT_HEADER + commitment
    tx_out = (
        compact_size(2)
        + struct.pack("<q", value) + compact_size(len(script_pubkey)) + script_pubkey
        + struct.pack("<q", 0) + compact_size(len(commit_script)) + commit_script
    )
    locktime = b"\x00\x00\x00\x00"
    witness = compact_size(1) + compact_size(32) + WITNESS_RESERVED_VALUE
    raw = version + b"\x00\x01" + tx_in + tx_out + witness + locktime
    txid = sha256d(version + tx_in + tx_out + locktime)
    return Coinbase(raw=raw, txid=txid)


def solve_header(header: BlockHeader) -> BlockHeader:
    """Find a nonce meeting ``header.bits``; regtest needs about two tries."""
    target = bits_to_target(header.bits)
    prefix = header.serialize()[:76]
    for nonce in range(header.nonce, header.nonce + MAX_NONCE_TRIES):
        nonce &= 0xFFFFFFFF
        if int.from_bytes(sha256d(prefix + struct.pack("<I", nonce)), "little") <= target:
            return BlockHeader(
                version=header.version, prev_hash=header.prev_hash,
                merkle_root=header.merkle_root, time=header.time,
                bits=header.bits, nonce=nonce,
            )
    raise BlockBuildError("no nonce found; is nBits a regtest target?")


def build_block(
    *,
    prev_hash: bytes,
    height: int,
    time: int,
    script_pubkey: bytes,
    transactions: list[tuple[bytes, bytes, bytes]],
    fees: int,
    extra_nonce: bytes,
    bits: int = REGTEST_BITS,
) -> bytes:
    """Build and solve a regtest block, returning its serialization.

    Args:
        prev_hash: the parent's hash (internal byte order).
        height: the new block's height (BIP 34).
        time: header timestamp; the caller makes it exceed median-time-past.
        script_pubkey: where the subsidy and fees go.
        transactions: ``(raw, txid, wtxid)`` of each non-coinbase
            transaction, in an order where parents come before children.
        fees: total fees of ``transactions`` in satoshis.
        extra_nonce: bytes pushed after the height, making coinbases unique.
    """
    commitment = witness_commitment([wtxid for _, _, wtxid in transactions])
    coinbase = build_coinbase(
        height=height, script_pubkey=script_pubkey,
        value=block_subsidy(height) + fees, extra_nonce=extra_nonce, commitment=commitment,
    )
    root = merkle_root([coinbase.txid, *(txid for _, txid, _ in transactions)])
    header = solve_header(BlockHeader(
        version=BLOCK_VERSION, prev_hash=prev_hash, merkle_root=root,
        time=time, bits=bits, nonce=0,
    ))
    body = b"".join(raw for raw, _, _ in transactions)
    return header.serialize() + compact_size(1 + len(transactions)) + coinbase.raw + body
