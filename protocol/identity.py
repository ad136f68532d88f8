"""Node identity: Ed25519 keys and node IDs (DESIGN.md, Network).

A node's identity key is Ed25519 (RFC 8032).  Its node ID is the first 20
bytes of SHA-256 of the 32-byte raw public key, the 160-bit ID space of the
Kademlia DHT.  Key generation takes the 32-byte seed from the caller, so this
module stays free of global randomness.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

NODE_ID_SIZE = 20
PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64


class IdentityError(ValueError):
    """A key, node ID or signature is malformed."""


def node_id_from_public_key(public_key: bytes) -> bytes:
    """Return the 20-byte node ID of a raw Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise IdentityError(f"identity public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    return hashlib.sha256(public_key).digest()[:NODE_ID_SIZE]


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Check an Ed25519 signature; False for any malformed key or signature."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        verifier = eddsa.new(eddsa.import_public_key(public_key), "rfc8032")
        verifier.verify(message, signature)
    except (ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """An Ed25519 identity built from a 32-byte secret seed."""

    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)
    node_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise IdentityError(f"identity seed must be {SEED_SIZE} bytes, got {len(self.seed)}")
        key = ECC.construct(curve="Ed25519", seed=self.seed)
        public = key.public_key().export_key(format="raw")
        object.__setattr__(self, "public_key", public)
        object.__setattr__(self, "node_id", node_id_from_public_key(public))

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        key = ECC.construct(curve="Ed25519", seed=self.seed)
        return eddsa.new(key, "rfc8032").sign(message)
