"""Noise CipherState and SymmetricState for AESGCM / SHA256 / 25519.

Implements sections 4 and 5.1-5.2 of the Noise Protocol Framework,
revision 34 (https://noiseprotocol.org/noise.html), with the fixed suite
``25519_AESGCM_SHA256``:

* DH is X25519 (RFC 7748) from pycryptodome, DHLEN = 32.
* The cipher is AES-256-GCM with a 96-bit nonce made of 32 zero bits
  followed by the 64-bit counter ``n`` big-endian (spec section 12.3).
* HASH is SHA-256, HASHLEN = 32, and HKDF is the HMAC-based construction
  of spec section 4.3.

Nothing here draws randomness: keys come from the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable

from Crypto.Protocol import DH

from protocol.noise._gcm import KeyedGcm, TagMismatch

DHLEN = 32
HASHLEN = 32
TAG_SIZE = 16
KEY_SIZE = 32
# Spec section 5.1: nonce 2^64-1 is reserved; a CipherState refuses to use it.
MAX_NONCE = 2**64 - 1
# The AES-GCM IV of nonce n: 32 zero bits, then n as 64 bits big-endian (spec section 12.3).
_IV = struct.Struct(">4xQ")


class NoiseError(ValueError):
    """A Noise operation failed: bad key, failed authentication, exhausted nonce."""


def x25519_public_key(private_key: bytes) -> bytes:
    """Return the 32-byte X25519 public key of a 32-byte private key."""
    if len(private_key) != DHLEN:
        raise NoiseError(f"X25519 private key must be {DHLEN} bytes")
    key = DH.import_x25519_private_key(private_key)
    return bytes(key.public_key().export_key(format="raw"))


def x25519(private_key: bytes, public_key: bytes) -> bytes:
    """Spec section 4.1 DH(): the X25519 shared secret.

    Raises NoiseError for malformed or low-order public keys, which
    pycryptodome refuses (spec section 12.1 allows rejecting them).
    """
    if len(private_key) != DHLEN or len(public_key) != DHLEN:
        raise NoiseError("X25519 keys must be 32 bytes")
    try:
        priv = DH.import_x25519_private_key(private_key)
        pub = DH.import_x25519_public_key(public_key)
        shared: bytes = DH.key_agreement(static_priv=priv, static_pub=pub, kdf=lambda z: z)
    except (ValueError, TypeError) as exc:
        raise NoiseError(f"X25519 failed: {exc}") from exc
    return shared


def hkdf2(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """Spec section 4.3 HKDF() with two outputs."""
    temp_key = hmac.digest(chaining_key, input_key_material, "sha256")
    output1 = hmac.digest(temp_key, b"\x01", "sha256")
    output2 = hmac.digest(temp_key, output1 + b"\x02", "sha256")
    return output1, output2


class CipherState:
    """Spec section 5.1: a key ``k`` (or none) and a 64-bit nonce ``n``.

    ``encrypt_with_ad`` / ``decrypt_with_ad`` follow the spec exactly.
    ``seal_into`` / ``open_split`` are the same operations on caller
    buffers and pieces, so the transport can move megabyte records without
    extra copies (specs/wire.md §4.3 Implementation note).  All of them run through
    one ``KeyedGcm`` per key, which keeps the AES key schedule and GHASH
    tables across records instead of rebuilding them for every nonce.
    """

    __slots__ = ("_key", "_nonce", "_gcm")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEY_SIZE:
            raise NoiseError(f"cipher key must be {KEY_SIZE} bytes")
        self._key = key
        self._nonce = 0
        self._gcm = KeyedGcm(key) if key is not None else None

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def nonce(self) -> int:
        return self._nonce

    def _gcm_and_nonce(self) -> tuple[KeyedGcm, int]:
        if self._gcm is None:
            raise NoiseError("cipher state has no key")
        if self._nonce >= MAX_NONCE:
            raise NoiseError("nonce space exhausted")
        return self._gcm, self._nonce

    def seal_into(self, ad: bytes, parts: tuple[bytes, ...], output: memoryview) -> None:
        """ENCRYPT(k, n++, ad, concatenated parts) into ``output`` (plaintext + TAG_SIZE bytes)."""
        gcm, n = self._gcm_and_nonce()
        gcm.seal_into(_IV.pack(n), ad, parts, output)
        self._nonce = n + 1

    def open_split(
        self, ad: bytes, record: memoryview, head_size: int, middle_size: Callable[[bytes], int]
    ) -> tuple[bytes, bytes, bytes]:
        """DECRYPT(k, n, ad, record) as (head, middle, rest); ``n`` advances only on success.

        See ``KeyedGcm.open_split``: nothing is returned unless the tag
        verifies, and ``record`` is only read.
        """
        gcm, n = self._gcm_and_nonce()
        try:
            pieces = gcm.open_split(_IV.pack(n), ad, record, head_size, middle_size)
        except TagMismatch as exc:
            raise NoiseError("authentication failed") from exc
        self._nonce = n + 1
        return pieces

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._key is None:
            return bytes(plaintext)
        out = bytearray(len(plaintext) + TAG_SIZE)
        self.seal_into(ad, (plaintext,), memoryview(out))
        return bytes(out)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._key is None:
            return bytes(ciphertext)
        gcm, n = self._gcm_and_nonce()
        try:
            plaintext = gcm.open(_IV.pack(n), ad, ciphertext)
        except TagMismatch as exc:
            raise NoiseError("authentication failed") from exc
        self._nonce = n + 1
        return plaintext


class SymmetricState:
    """Spec section 5.2: chaining key ``ck``, handshake hash ``h`` and a CipherState."""

    __slots__ = ("_ck", "_h", "_cipher")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = hashlib.sha256(protocol_name).digest()
        self._h = h
        self._ck = h
        self._cipher = CipherState()

    @property
    def handshake_hash(self) -> bytes:
        return self._h

    def mix_key(self, input_key_material: bytes) -> None:
        self._ck, temp_k = hkdf2(self._ck, input_key_material)
        self._cipher = CipherState(temp_k[:KEY_SIZE])

    def mix_hash(self, data: bytes) -> None:
        self._h = hashlib.sha256(self._h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    @property
    def has_key(self) -> bool:
        return self._cipher.has_key

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = hkdf2(self._ck, b"")
        return CipherState(temp_k1[:KEY_SIZE]), CipherState(temp_k2[:KEY_SIZE])
