"""Noise_XX_25519_AESGCM_SHA256 as a pure state machine (X25519 from pycryptodome,
AES-256-GCM from cryptography).

See specs/wire.md §3 Handshake for how mu uses it.  Callers supply every private key
(static and ephemeral), so this package draws no randomness.
"""

from protocol.noise._handshake import MAX_HANDSHAKE_MESSAGE, PROTOCOL_NAME, XXHandshake
from protocol.noise._symmetric import (
    DHLEN,
    MAX_NONCE,
    TAG_SIZE,
    CipherState,
    NoiseError,
    SymmetricState,
    hkdf2,
    x25519,
    x25519_public_key,
)

__all__ = [
    "DHLEN",
    "MAX_HANDSHAKE_MESSAGE",
    "MAX_NONCE",
    "PROTOCOL_NAME",
    "TAG_SIZE",
    "CipherState",
    "NoiseError",
    "SymmetricState",
    "XXHandshake",
    "hkdf2",
    "x25519",
    "x25519_public_key",
]
