"""Noise_XX_25519_AESGCM_SHA256 on pycryptodome, as a pure state machine.

See specs/wire.md §2 for how mu uses it.  Callers supply every private key
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
