"""Stripes, shares and the stripe map (specs/erasure.md §Stripe map, §Shares).

A file's chunks, in the order :class:`protocol.chunks.RawWalker` yields them
(manifests and data alike), are grouped ``k`` at a time into stripes.  Each
stripe's chunks are zero-padded to the stripe's block size and encoded with
zfec into ``n`` shares: shares ``0..k-1`` are the padded chunks themselves
(zfec is systematic), shares ``k..n-1`` are parity.  Any ``k`` shares give the
stripe back.  Every share is stored as an ordinary content-addressed chunk,
its address SHA-256(share), so a host that returns wrong bytes is caught on
that one share (specs/erasure.md §Shares).

The stripe map lists, per stripe, the chunks (address, length) and the ``n``
share addresses.  It is itself a chunk, replicated on ``n`` hosts; its
address and the file's link are what a reader needs.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import zfec  # type: ignore[import-untyped]

from protocol.chunks import MAX_SEALED_SIZE

MAGIC = b"MUSM"
VERSION = 1
DEFAULT_K = 4
DEFAULT_N = 8
MAX_N = 32  # shares per stripe at most (and so hosts per stripe)
# Stripes per map at most: the map must fit in one chunk (specs/erasure.md §Limits).
MAX_STRIPES = 4096
_HEADER = struct.Struct(">4sBBBB32sI")
_STRIPE = struct.Struct(">BI")
_CHUNK = struct.Struct(">32sI")


class StripeMapError(ValueError):
    """A stripe map that is not in the canonical format of specs/erasure.md §Stripe map."""


class NotEnoughShares(Exception):
    """Fewer than ``k`` verified shares of a stripe could be had."""


def share_address(share: bytes) -> bytes:
    return hashlib.sha256(share).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Stripe:
    """One stripe: its chunks (address, length) and its ``n`` share addresses, in share order."""

    chunks: tuple[tuple[bytes, int], ...]
    block_size: int
    shares: tuple[bytes, ...]

    def padding(self, k: int) -> range:
        """Indices of the all-zero blocks that complete a stripe of fewer than ``k`` chunks: every reader
        knows them, so they are not shares, never stored, fetched or audited (specs/erasure.md §3)."""
        return range(len(self.chunks), k)

    def stored(self, k: int) -> list[int]:
        """Indices of the shares that are stored: all ``n`` but the padding."""
        return [i for i in range(len(self.shares)) if not len(self.chunks) <= i < k]


@dataclass(frozen=True, slots=True, kw_only=True)
class StripeMap:
    k: int
    n: int
    root: bytes
    stripes: tuple[Stripe, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n <= MAX_N:
            raise StripeMapError(f"k-of-n must have 1 <= k <= n <= {MAX_N}, got {self.k}-of-{self.n}")
        if len(self.root) != 32:
            raise StripeMapError("root must be 32 bytes")
        if not 1 <= len(self.stripes) <= MAX_STRIPES:
            raise StripeMapError(f"a map holds 1..{MAX_STRIPES} stripes, got {len(self.stripes)}")
        for i, s in enumerate(self.stripes):
            if not 1 <= len(s.chunks) <= self.k or len(s.shares) != self.n:
                raise StripeMapError(f"stripe {i}: {len(s.chunks)} chunks and {len(s.shares)} shares for {self.k}-of-{self.n}")
            if not 1 <= s.block_size <= MAX_SEALED_SIZE or max(length for _, length in s.chunks) != s.block_size:
                raise StripeMapError(f"stripe {i}: block size {s.block_size} is not its longest chunk")
            if any(len(a) != 32 for a, _ in s.chunks) or any(len(a) != 32 for a in s.shares):
                raise StripeMapError(f"stripe {i}: addresses must be 32 bytes")
            if any(length < 1 for _, length in s.chunks):
                raise StripeMapError(f"stripe {i}: empty chunk")

    def serialize(self) -> bytes:
        out = [_HEADER.pack(MAGIC, VERSION, self.k, self.n, 0, self.root, len(self.stripes))]
        for s in self.stripes:
            out.append(_STRIPE.pack(len(s.chunks), s.block_size))
            out.extend(_CHUNK.pack(a, length) for a, length in s.chunks)
            out.extend(s.shares)
        return b"".join(out)

    @classmethod
    def parse(cls, data: bytes) -> StripeMap:
        """Raises StripeMapError on anything but the canonical encoding (trailing bytes included)."""
        if len(data) < _HEADER.size:
            raise StripeMapError("stripe map too short")
        magic, version, k, n, reserved, root, count = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or reserved != 0:
            raise StripeMapError("not a version 1 stripe map")
        if not 1 <= count <= MAX_STRIPES or not 1 <= k <= n <= MAX_N:
            raise StripeMapError("stripe map header out of range")
        pos, stripes = _HEADER.size, []
        for i in range(count):
            if len(data) < pos + _STRIPE.size:
                raise StripeMapError(f"stripe map truncated in stripe {i}")
            chunk_count, block_size = _STRIPE.unpack_from(data, pos)
            pos += _STRIPE.size
            end = pos + chunk_count * _CHUNK.size + n * 32
            if len(data) < end or not 1 <= chunk_count <= k:
                raise StripeMapError(f"stripe map truncated or out of range in stripe {i}")
            chunks = tuple(_CHUNK.unpack_from(data, pos + j * _CHUNK.size) for j in range(chunk_count))
            pos += chunk_count * _CHUNK.size
            shares = tuple(data[pos + j * 32:pos + (j + 1) * 32] for j in range(n))
            pos = end
            stripes.append(Stripe(chunks=chunks, block_size=block_size, shares=shares))
        if pos != len(data):
            raise StripeMapError("trailing bytes after the stripe map")
        return cls(k=k, n=n, root=root, stripes=tuple(stripes))


def encode_stripe(chunks: list[tuple[bytes, bytes]], k: int, n: int) -> tuple[Stripe, list[bytes]]:
    """Encode up to ``k`` chunks (address, bytes) into ``n`` shares; return the stripe entry and the shares.

    A stripe with fewer than ``k`` chunks (the file's last) is completed with
    all-zero blocks, which are encoded but never stored: they are not shares.
    """
    if not 1 <= len(chunks) <= k:
        raise ValueError(f"a stripe holds 1..{k} chunks")
    block = max(len(data) for _, data in chunks)
    blocks = [data.ljust(block, b"\0") for _, data in chunks]
    blocks += [bytes(block)] * (k - len(blocks))
    shares = list(zfec.Encoder(k, n).encode(tuple(blocks)))
    shares = [bytes(s) for s in shares]
    stripe = Stripe(chunks=tuple((a, len(d)) for a, d in chunks), block_size=block,
                    shares=tuple(share_address(s) for s in shares))
    return stripe, shares


def decode_stripe(stripe: Stripe, k: int, shares: dict[int, bytes]) -> list[tuple[bytes, bytes]]:
    """The stripe's chunks (address, bytes) from any ``k`` verified shares (index -> bytes).

    Raises:
        NotEnoughShares: fewer than ``k`` shares given.
        ValueError: a share of the wrong size or a decoded chunk that is not its address
            (the caller checks every share against its address first, so this is a bug or a bad map).
    """
    if len(shares) < k:
        raise NotEnoughShares(f"{len(shares)} of the {k} shares needed")
    chosen = sorted(shares.items())[:k]
    if any(len(s) != stripe.block_size for _, s in chosen):
        raise ValueError("a share is not the stripe's block size")
    if [i for i, _ in chosen] == list(range(k)):
        blocks = [s for _, s in chosen]
    else:
        blocks = [bytes(b) for b in zfec.Decoder(k, len(stripe.shares)).decode(
            tuple(s for _, s in chosen), tuple(i for i, _ in chosen))]
    out = []
    for (address, length), block in zip(stripe.chunks, blocks):
        data = block[:length]
        if hashlib.sha256(data).digest() != address:
            raise ValueError(f"stripe decoded to a chunk that is not {address.hex()}")
        out.append((address, data))
    return out
