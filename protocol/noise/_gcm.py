"""AES-256-GCM for many records under one key, without copies of big ones.

Noise encrypts every transport message under a fresh nonce, and mu sends
one record per frame (specs/wire.md §4 Records, §4.3 Implementation note),
so a session runs one GCM computation per record.  A record holds a small
header and meta section and, for chunks, up to 4 MiB of data; what costs is
then not the cipher (one pass over the bytes) but every extra pass: joining
header and data into one buffer before encrypting, decrypting into a
scratch buffer and copying the plaintext out again.  Each such pass costs
about as much as the cipher itself, and a fresh megabyte buffer per record
also costs page faults when the allocator hands its memory back between
records.

``KeyedGcm`` therefore has two paths, one output:

* records of at most ``ONE_SHOT_MAX`` bytes go through one ``cryptography``
  ``AESGCM`` object built once per key (OpenSSL keeps the expanded key and
  the GHASH tables in it): one call, no per-record set-up, and joining or
  slicing a few KiB is cheaper than a cipher context;
* bigger records go through a streaming GCM context (``Cipher`` with
  ``modes.GCM``), which costs a few microseconds of set-up per record (the
  key schedule again) but encrypts each piece straight from the caller's
  buffer into its place in the output, and decrypts each piece of the
  record straight into the ``bytes`` object the caller keeps: the data of a
  1 MiB chunk is read once and written once.

The bytes are exactly AES-256-GCM's (NIST SP 800-38D with a 96-bit IV): the
tests compare both paths with pycryptodome's GCM and with the AES-256
vectors of the GCM specification.

Decryption never hands out unauthenticated plaintext: ``open_split``
returns its pieces only after the tag has verified, and raises TagMismatch
(with the pieces dropped) otherwise.  The streaming path does decrypt the
first piece before the tag is checked, so that the caller can say where the
next piece ends (a frame header carries its meta length); that size only
places a cut in the plaintext and is clamped to the record, so a forged one
changes nothing but which bytes end up in which piece of a record that is
then refused.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG_SIZE = 16
IV_SIZE = 12
KEY_SIZE = 32
# GCM's 32-bit block counter: at most 2^32 - 2 blocks per message (SP 800-38D).
MAX_MESSAGE = (2**32 - 2) * 16
# Plaintext size up to which the one-shot AESGCM call is used.  Past it a
# streaming context's set-up (about 5 us here) costs less than the copy it
# saves, and the copy's buffer would be a fresh allocation per record.
ONE_SHOT_MAX = 64 * 1024


class TagMismatch(ValueError):
    """The record's tag does not authenticate it under this key and nonce."""


class KeyedGcm:
    """AES-256-GCM with the key's set-up kept across records (see the module docstring)."""

    __slots__ = ("_aead", "_aes")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"AES-256-GCM key must be {KEY_SIZE} bytes")
        self._aead = AESGCM(bytes(key))
        self._aes = algorithms.AES(bytes(key))

    def seal_into(self, iv: bytes, ad: bytes, parts: tuple[bytes, ...], output: memoryview) -> None:
        """Encrypt the concatenation of ``parts`` into ``output``, tag last.

        ``iv`` is the 12-byte GCM IV; ``output`` must be exactly the
        plaintext length plus TAG_SIZE.  Raises ValueError otherwise.
        """
        _check_iv(iv)
        size = len(output) - TAG_SIZE
        if size > MAX_MESSAGE:
            raise ValueError("message too long for GCM")
        if size != sum(len(part) for part in parts):
            raise ValueError("output must be the plaintext length plus the tag")
        if len(parts) == 1 or size <= ONE_SHOT_MAX:
            plaintext = parts[0] if len(parts) == 1 else b"".join(parts)
            self._aead.encrypt_into(iv, plaintext, ad, output)
            return
        encryptor = Cipher(self._aes, modes.GCM(iv)).encryptor()
        encryptor.authenticate_additional_data(ad)
        offset = 0
        for part in parts:
            end = offset + len(part)
            offset += encryptor.update_into(part, output[offset:end])
        encryptor.finalize()
        output[size:] = encryptor.tag

    def open(self, iv: bytes, ad: bytes, record: bytes | memoryview) -> bytes:
        """Authenticate ``record`` (ciphertext || tag) and return its plaintext.

        Raises TagMismatch if the tag is wrong.
        """
        _check_iv(iv)
        if len(record) < TAG_SIZE:
            raise TagMismatch("record shorter than the tag")
        try:
            return self._aead.decrypt(iv, record, ad)
        except InvalidTag:
            raise TagMismatch("authentication failed") from None

    def open_split(
        self, iv: bytes, ad: bytes, record: memoryview, head_size: int, middle_size: Callable[[bytes], int]
    ) -> tuple[bytes, bytes, bytes]:
        """Authenticate ``record`` and return its plaintext as (head, middle, rest).

        ``head`` is the first ``head_size`` bytes; ``middle_size(head)``
        says how many bytes the middle takes (clamped to what is left; on
        big records it sees the head before the tag is checked, see the
        module docstring); ``rest`` is what remains.  ``record`` is only
        read.  Raises TagMismatch if the tag is wrong or the record is
        shorter than the tag plus ``head_size``.
        """
        _check_iv(iv)
        size = len(record) - TAG_SIZE
        if size < head_size:
            raise TagMismatch("record shorter than its head and tag")
        if size <= ONE_SHOT_MAX:
            plaintext = self.open(iv, ad, record)
            head = plaintext[:head_size]
            cut = head_size + min(max(0, middle_size(head)), size - head_size)
            return head, plaintext[head_size:cut], plaintext[cut:]
        decryptor = Cipher(self._aes, modes.GCM(iv, bytes(record[size:]))).decryptor()
        decryptor.authenticate_additional_data(ad)
        head = decryptor.update(record[:head_size])
        cut = head_size + min(max(0, middle_size(head)), size - head_size)
        middle = decryptor.update(record[head_size:cut])
        rest = decryptor.update(record[cut:size])
        try:
            decryptor.finalize()
        except InvalidTag:
            raise TagMismatch("authentication failed") from None
        return head, middle, rest


def _check_iv(iv: bytes) -> None:
    if len(iv) != IV_SIZE:
        raise ValueError(f"GCM IV must be {IV_SIZE} bytes")
