"""AES-256-GCM for many short-lived records under one key.

Noise encrypts every transport message under a fresh nonce, and mu sends
one record per frame (specs/wire.md §4 Records, §4.3 Implementation note), so a session
runs one GCM computation per record.  A per-message cipher object (as
pycryptodome's ``AES.new(key, MODE_GCM, nonce)``) re-derives the AES key
schedule, the hash subkey ``H = E(K, 0^128)`` and the GHASH tables for each
of them: tens of microseconds of set-up per record, most of the cost of a
small one.

``KeyedGcm`` holds one ``cryptography`` ``AESGCM`` object per key, built
once: OpenSSL keeps the expanded key and the GHASH tables in it, and each
record is one call into OpenSSL's AES-NI / CLMUL code with no per-message
set-up.  The bytes are exactly AES-256-GCM's (NIST SP 800-38D with a 96-bit
IV): the tests compare them with pycryptodome's GCM and with the AES-256
vectors of the GCM specification.

Decryption authenticates before anything reaches the caller's buffer:
OpenSSL decrypts into a fresh buffer that is only copied over the record
once the tag has verified, so a forged record leaves the ciphertext in
place and never exposes unauthenticated plaintext.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG_SIZE = 16
IV_SIZE = 12
KEY_SIZE = 32
# GCM's 32-bit block counter: at most 2^32 - 2 blocks per message (SP 800-38D).
MAX_MESSAGE = (2**32 - 2) * 16


class TagMismatch(ValueError):
    """The record's tag does not authenticate it under this key and nonce."""


class KeyedGcm:
    """AES-256-GCM with the key's set-up done once and kept across records."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"AES-256-GCM key must be {KEY_SIZE} bytes")
        self._aead = AESGCM(bytes(key))

    def seal_into(self, iv: bytes, ad: bytes, parts: tuple[bytes, ...], output: memoryview) -> None:
        """Encrypt the concatenation of ``parts`` into ``output``, tag last.

        ``iv`` is the 12-byte GCM IV; ``output`` must be exactly the
        plaintext length plus TAG_SIZE.  Raises ValueError otherwise.
        """
        if len(iv) != IV_SIZE:
            raise ValueError(f"GCM IV must be {IV_SIZE} bytes")
        size = len(output) - TAG_SIZE
        if size > MAX_MESSAGE:
            raise ValueError("message too long for GCM")
        # OpenSSL takes one plaintext buffer: a record of header and data is
        # joined (one copy, far cheaper than the encryption itself).
        plaintext = parts[0] if len(parts) == 1 else b"".join(parts)
        self._aead.encrypt_into(iv, plaintext, ad, output)

    def open_in_place(self, iv: bytes, ad: bytes, record: memoryview) -> None:
        """Authenticate ``record`` (ciphertext || tag), then decrypt it in place.

        The plaintext takes the first ``len(record) - TAG_SIZE`` bytes.
        Raises TagMismatch, leaving ``record`` untouched, if the tag is wrong.
        """
        if len(iv) != IV_SIZE:
            raise ValueError(f"GCM IV must be {IV_SIZE} bytes")
        size = len(record) - TAG_SIZE
        if size < 0:
            raise TagMismatch("record shorter than the tag")
        try:
            plaintext = self._aead.decrypt(iv, record, ad)
        except InvalidTag:
            raise TagMismatch("authentication failed") from None
        record[:size] = plaintext
