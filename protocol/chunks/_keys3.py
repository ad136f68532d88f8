"""Format-3 chunk keys: one single-use AES-256-GCM key per chunk (specs/chunks.md §4.4 Format-3 keys).

In format 3 every child's key is written in its parent's sealed private part
(§6.2), so a reader never derives a data or index key: it takes them from
the tree, starting at the root, whose key follows from the link's key.
How the writer chose each key is its own business; two schedules exist:

* positional (``mu add``): HKDF of the file key and the chunk's (kind,
  level, index), as in format 2 but with ``v3`` labels;
* convergent (``chunk_secret``, folder snapshots): HMAC of the folder's
  chunk secret and SHA-256 of the chunk's plaintext, so equal plaintext
  gives an equal chunk under that secret and only under it (§11 Security).

Each key seals exactly one plaintext, so the GCM nonce is fixed (all
zeros): a key/nonce pair recurs only with the plaintext that defined the
key (§11 Security).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._crypto import NONCE_SIZE, TAG_SIZE, check_key
from ._errors import IntegrityError, LocalChunkError

# Tagged, versioned labels (§4.4 Format-3 keys); never shared with format 2's.
EXTRACT_SALT_V3 = b"mu:file-key:v3"
CHUNK_KEY_LABEL_V3 = b"mu:chunk-key:v3"
DATA_KEY_LABEL = b"mu:convergent-data:v3"
NODE_KEY_LABEL = b"mu:convergent-node:v3"
FILE_KEY_LABEL = b"mu:convergent-file:v3"
ADD_SECRET_LABEL = b"mu:add-chunk-secret:v3"
ZERO_NONCE = bytes(NONCE_SIZE)
CHUNK_SECRET_SIZE = 32

_CONTEXT = struct.Struct(">BBQ")  # kind, level, index


def seal_keyed(key: bytes, plaintext: bytes | bytearray | memoryview,
               aad: bytes | bytearray | memoryview = b"") -> bytearray:
    """AES-256-GCM under a single-use ``key`` (zero nonce); return ciphertext || tag."""
    out = bytearray(len(plaintext) + TAG_SIZE)
    AESGCM(key).encrypt_into(ZERO_NONCE, plaintext, aad or None, out)
    return out


def open_keyed(key: bytes, stored: bytes | bytearray | memoryview, address: bytes,
               aad: bytes | bytearray | memoryview = b"") -> bytearray:
    """Decrypt and authenticate a chunk sealed by :func:`seal_keyed`; raise IntegrityError if it fails."""
    size = len(stored) - TAG_SIZE
    if size < 0:
        raise IntegrityError(f"chunk {address.hex()} is shorter than a GCM tag", address=address)
    out = bytearray(size)
    try:
        AESGCM(key).decrypt_into(ZERO_NONCE, stored, aad or None, out)
    except InvalidTag:
        raise IntegrityError(
            f"chunk {address.hex()} failed authentication (wrong key or corrupted data)", address=address
        ) from None
    return out


class PositionalKeys:
    """Format-3 keys derived from a file key and a chunk's position (§4.4).

    Also gives every format-3 root its key: the root is always keyed by
    position (kind 2, level 0, index 0) from the link's key.
    """

    __slots__ = ("_prk",)

    def __init__(self, file_key: bytes) -> None:
        self._prk = hmac.digest(EXTRACT_SALT_V3, check_key(file_key), "sha256")

    def key(self, kind: int, level: int, index: int) -> bytes:
        """The key of the chunk at (kind, level, index): HKDF-Expand, L = 32."""
        return hmac.digest(self._prk, CHUNK_KEY_LABEL_V3 + _CONTEXT.pack(kind, level, index) + b"\x01", "sha256")


def check_chunk_secret(secret: bytes) -> bytes:
    """Return ``secret`` as bytes if it is a 32-byte chunk secret, else raise."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != CHUNK_SECRET_SIZE:
        raise LocalChunkError(f"a chunk secret is {CHUNK_SECRET_SIZE} bytes")
    return bytes(secret)


def chunk_secret_for_add(convergence_secret: bytes) -> bytes:
    """The chunk secret ``mu add --convergent`` uses: HMAC(convergence secret, label) (§4.4).

    Format 3 makes ``--convergent`` convergent per chunk under the user's
    secret, so it needs no extra read pass; the label keeps this secret
    apart from any folder's.
    """
    if len(convergence_secret) < 16:
        raise LocalChunkError("a convergence secret is at least 16 bytes")
    return hmac.digest(bytes(convergence_secret), ADD_SECRET_LABEL, "sha256")


class ConvergentKeys:
    """Format-3 keys derived from a chunk secret and the chunk's plaintext (§4.4)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        self._secret = check_chunk_secret(secret)

    def data_key(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """Key of a data chunk: HMAC(secret, label || SHA-256(plaintext))."""
        return hmac.digest(self._secret, DATA_KEY_LABEL + hashlib.sha256(plaintext).digest(), "sha256")

    def node_key(self, prefix: bytes, private: bytes) -> bytes:
        """Key of an index chunk: HMAC(secret, label || SHA-256(prefix || private part))."""
        digest = hashlib.sha256(prefix + private).digest()
        return hmac.digest(self._secret, NODE_KEY_LABEL + digest, "sha256")

    def file_key(self, prefix: bytes, private: bytes) -> bytes:
        """The link key of a file: HMAC(secret, label || SHA-256(root prefix || root private part))."""
        digest = hashlib.sha256(prefix + private).digest()
        return hmac.digest(self._secret, FILE_KEY_LABEL + digest, "sha256")


