"""Key and nonce derivation and per-chunk AES-256-GCM (specs/chunks.md §4 Key derivation, §5 Chunks).

Every chunk of a file is sealed with its own key and nonce, both derived with
HKDF-SHA256 (RFC 5869) from the 32-byte file key and the chunk's position in
the file (kind, level, index). Labels are tagged and versioned so a future
format can never reuse a key/nonce pair of this one. Manifest chunks bind
their cleartext header (the verify-cap part, §6) as GCM associated data.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._errors import IntegrityError, LocalChunkError
from ._sizes import ADDRESS_SIZE as ADDRESS_SIZE, KEY_SIZE as KEY_SIZE, NONCE_SIZE as NONCE_SIZE, TAG_SIZE as TAG_SIZE

# Tagged, versioned labels (specs/chunks.md §4 Key derivation). Changing any of them is a new
# format version, never an edit in place.
EXTRACT_SALT = b"mu:file-key:v2"
CHUNK_KEY_LABEL = b"mu:chunk-key:v2"
CHUNK_NONCE_LABEL = b"mu:chunk-nonce:v2"
CONVERGENT_LABEL = b"mu:convergent-key:v2"

# Chunk kinds, the first byte of the derivation context.
KIND_DATA = 0
KIND_INDEX = 1
KIND_ROOT = 2

_CONTEXT = struct.Struct(">BBQ")  # kind, level, index


def chunk_address(data: bytes | bytearray | memoryview) -> bytes:
    """The address of a stored chunk: SHA-256 of its bytes (32 bytes)."""
    return hashlib.sha256(data).digest()


def check_key(key: bytes) -> bytes:
    """Return ``key`` as bytes if it is a 32-byte file key, else raise."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise LocalChunkError(f"a file key is {KEY_SIZE} bytes, got {len(key) if hasattr(key, '__len__') else type(key).__name__}")
    return bytes(key)


class ChunkSealer:
    """Derives per-chunk keys/nonces for one file key and seals/opens chunks.

    HKDF-Extract runs once per file; each chunk then costs two one-block
    HKDF-Expand calls (two HMAC-SHA256 over < 64 bytes).  AES-GCM runs in
    OpenSSL through ``cryptography`` (several times pycryptodome's rate on
    the same machine, issue 22) straight into the output buffer; the bytes
    are the same AES-256-GCM (tests/vectors/chunks.json).
    """

    __slots__ = ("_prk",)

    def __init__(self, file_key: bytes) -> None:
        self._prk = hmac.digest(EXTRACT_SALT, check_key(file_key), "sha256")

    def derive(self, kind: int, level: int, index: int) -> tuple[bytes, bytes]:
        """Return (key, nonce) for the chunk at (kind, level, index)."""
        context = _CONTEXT.pack(kind, level, index)
        key = hmac.digest(self._prk, CHUNK_KEY_LABEL + context + b"\x01", "sha256")
        nonce = hmac.digest(self._prk, CHUNK_NONCE_LABEL + context + b"\x01", "sha256")[:NONCE_SIZE]
        return key, nonce

    def seal(self, plaintext: bytes | bytearray | memoryview, kind: int, level: int, index: int,
             aad: bytes | bytearray | memoryview = b"") -> bytearray:
        """Encrypt ``plaintext`` (authenticating ``aad`` too); return ciphertext || tag in a fresh buffer."""
        key, nonce = self.derive(kind, level, index)
        out = bytearray(len(plaintext) + TAG_SIZE)
        AESGCM(key).encrypt_into(nonce, plaintext, bytes(aad) if aad else None, out)
        return out

    def open(self, stored: bytes | bytearray | memoryview, kind: int, level: int, index: int, address: bytes,
             aad: bytes | bytearray | memoryview = b"") -> bytearray:
        """Decrypt and authenticate ``stored`` (and ``aad``); raise IntegrityError if it fails."""
        size = len(stored) - TAG_SIZE
        if size < 0:
            raise IntegrityError(f"chunk {address.hex()} is shorter than a GCM tag", address=address)
        key, nonce = self.derive(kind, level, index)
        out = bytearray(size)
        try:
            AESGCM(key).decrypt_into(nonce, stored, bytes(aad) if aad else None, out)
        except InvalidTag:
            raise IntegrityError(
                f"chunk {address.hex()} failed authentication (wrong key or corrupted data)",
                address=address,
            ) from None
        return out


class ConvergentKeyHasher:
    """Streams a file's plaintext and derives its convergent file key (§4.3).

    The key binds the per-user convergence secret, every encoding parameter
    that shapes the ciphertext (chunk size, fanout, name, media type, size)
    and SHA-256 of the plaintext, so the same (secret, file, parameters) always
    gives the same key and nothing else ever does (Tahoe-LAFS style).
    """

    __slots__ = ("_secret", "_params", "_hash", "_size")

    def __init__(self, secret: bytes, *, chunk_size: int, fanout: int, name: str | None, media_type: str | None) -> None:
        if len(secret) < 16:
            raise LocalChunkError("a convergence secret is at least 16 bytes")
        self._secret = bytes(secret)
        name_b = (name or "").encode()
        type_b = (media_type or "").encode()
        self._params = (
            struct.pack(">II", chunk_size, fanout)
            + struct.pack(">H", len(name_b)) + name_b
            + struct.pack(">H", len(type_b)) + type_b
        )
        self._hash = hashlib.sha256()
        self._size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next piece of plaintext."""
        self._hash.update(data)
        self._size += len(data)

    def file_key(self) -> bytes:
        """The 32-byte convergent file key for everything fed so far."""
        msg = CONVERGENT_LABEL + self._params + struct.pack(">Q", self._size) + self._hash.digest()
        return hmac.digest(self._secret, msg, "sha256")
