"""Helpers for transport tests: identities, payment keys, chunk data."""

from __future__ import annotations

import hashlib

from coincurve import PrivateKey

from protocol.identity import Identity


def identity(n: int) -> Identity:
    return Identity(hashlib.sha256(b"node %d" % n).digest())


def payment_key(n: int) -> bytes:
    return PrivateKey(hashlib.sha256(b"payment %d" % n).digest()).public_key.format(compressed=True)


def chunk(n: int, size: int = 1000) -> tuple[bytes, bytes]:
    """A (address, data) pair of deterministic bytes."""
    seed = hashlib.sha256(b"chunk %d" % n).digest()
    data = (seed * (size // 32 + 1))[:size]
    return hashlib.sha256(data).digest(), data
