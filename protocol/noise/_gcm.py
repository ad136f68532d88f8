"""AES-256-GCM for many short-lived records under one key.

Noise encrypts every transport message under a fresh nonce, and mu sends
one record per frame (specs/wire.md §4), so a session builds one GCM
computation per record.  pycryptodome's ``AES.new(key, MODE_GCM, nonce)``
re-derives everything that depends only on the key for each of them: the
AES key schedule (three times: ECB for the hash subkey, CTR for the data,
CTR for the tag mask), the hash subkey ``H = E(K, 0^128)`` and the GHASH
tables.  That is 55-110 µs of Python and C set-up per record, as much as
AES-GCM over 64 KiB, and most of the cost of a small record.

``KeyedGcm`` composes the same algorithm (NIST SP 800-38D, Algorithms 4
and 5, with a 96-bit IV so ``J0 = IV || 0^31 || 1``) from pieces built once
per key:

* one ECB cipher, which gives ``H`` once and the tag mask ``E(K, J0)`` per
  record, and for records of at most ``SMALL_RECORD`` bytes also the whole
  keystream (one call, no CTR object);
* pycryptodome's CTR mode (``initial_value = 2``) for the keystream of
  bigger records;
* pycryptodome's GHASH core (the same CLMUL or portable C code its GCM mode
  runs), over ``A || pad || C || pad || len(A) || len(C)``.

The bytes are exactly AES-256-GCM's: the tests compare every size class
with pycryptodome's own GCM and with the AES-256 vectors of the GCM
specification.  Decryption authenticates before it decrypts, so in-place
decryption never exposes unauthenticated plaintext to anyone.  The GHASH
core is not part of pycryptodome's public API; if an installed version
lacks it, ``KeyedGcm`` falls back to ``AES.new(..., MODE_GCM)`` per record
(same bytes, the old speed) and ``FAST_GHASH`` says so.
"""

from __future__ import annotations

import hmac
import struct
from typing import Any

from Crypto.Cipher import AES

try:  # pycryptodome's GHASH core (3.x and 4.x): _GHASH(subkey, c_module)
    from Crypto.Cipher._mode_gcm import _GHASH, _ghash_clmul, _ghash_portable

    _GHASH_C: Any = _ghash_clmul or _ghash_portable
except ImportError:  # pragma: no cover - depends on the installed pycryptodome
    _GHASH = None
    _GHASH_C = None

TAG_SIZE = 16
# Records up to this size take their keystream from one ECB call over the
# counter blocks instead of a CTR object (cheaper below a few KiB).
SMALL_RECORD = 4096
# GCM's 32-bit block counter: at most 2^32 - 2 blocks per message (SP 800-38D).
MAX_MESSAGE = (2**32 - 2) * 16

IV_SIZE = 12
_LENGTHS = struct.Struct(">QQ")
_ZEROS = bytes(16)
# Counter-block suffixes 1, 2, ... for J0, J0+1, ... of a small record.
_COUNTERS = tuple(i.to_bytes(4, "big") for i in range(1, SMALL_RECORD // 16 + 3))


class TagMismatch(ValueError):
    """The record's tag does not authenticate it under this key and nonce."""


def _pad(size: int) -> bytes:
    return _ZEROS[: -size % 16]


class KeyedGcm:
    """AES-256-GCM with the key's precomputation kept across records."""

    __slots__ = ("_key", "_ecb", "_h")

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)
        self._ecb = AES.new(self._key, AES.MODE_ECB)
        self._h = self._ecb.encrypt(_ZEROS)

    # ------------------------------------------------------------ helpers
    def _small_stream(self, iv: bytes, size: int) -> tuple[bytes, bytes]:
        """(E(K, J0), keystream) from one ECB call over J0, J0+1, J0+2, ..."""
        counters = b"".join([iv + suffix for suffix in _COUNTERS[: (size + 15) // 16 + 1]])
        stream = self._ecb.encrypt(counters)
        return stream[:16], stream[16 : 16 + size]

    def _ghash(self, ad: bytes, ciphertext: Any, size: int) -> int:
        """GHASH(H, A, C) (SP 800-38D, Algorithm 4 step 5) as an integer."""
        ghash = _GHASH(self._h, _GHASH_C)
        lengths = _LENGTHS.pack(8 * len(ad), 8 * size)
        if size <= SMALL_RECORD:
            ghash.update(b"".join((ad, _pad(len(ad)), ciphertext[:size], _pad(size), lengths)))
        else:
            tail = size - size % 16
            if ad:
                ghash.update(ad + _pad(len(ad)))
            ghash.update(ciphertext[:tail])
            ghash.update(b"".join((ciphertext[tail:size], _pad(size), lengths)))
        return int.from_bytes(ghash.digest(), "big")

    @staticmethod
    def _xor(a: Any, b: Any, size: int) -> bytes:
        return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(size, "big")

    # -------------------------------------------------------------- public
    def seal_into(self, iv: bytes, ad: bytes, parts: tuple[Any, ...], output: memoryview) -> None:
        """Encrypt the concatenation of ``parts`` into ``output``, tag last.

        ``iv`` is the 12-byte GCM IV; ``output`` must be exactly the
        plaintext length plus TAG_SIZE.
        """
        if len(iv) != IV_SIZE:
            raise ValueError(f"GCM IV must be {IV_SIZE} bytes")
        size = len(output) - TAG_SIZE
        if size > MAX_MESSAGE:
            raise ValueError("message too long for GCM")
        if _GHASH is None:  # pragma: no cover - old or unusual pycryptodome
            cipher = AES.new(self._key, AES.MODE_GCM, nonce=iv)
            cipher.update(ad)
            offset = 0
            for part in parts:
                cipher.encrypt(part, output=output[offset : offset + len(part)])
                offset += len(part)
            output[size:] = cipher.digest()
            return
        if size <= SMALL_RECORD:
            mask, stream = self._small_stream(iv, size)
            output[:size] = self._xor(b"".join(parts), stream, size)
        else:
            mask = self._ecb.encrypt(iv + _COUNTERS[0])
            ctr = self._ctr(iv)
            offset = 0
            for part in parts:
                ctr.encrypt(part, output=output[offset : offset + len(part)])
                offset += len(part)
        output[size:] = (self._ghash(ad, output, size) ^ int.from_bytes(mask, "big")).to_bytes(16, "big")

    def open_in_place(self, iv: bytes, ad: bytes, record: memoryview) -> None:
        """Authenticate ``record`` (ciphertext || tag), then decrypt it in place.

        Raises TagMismatch, leaving ``record`` untouched, if the tag is wrong.
        """
        if len(iv) != IV_SIZE:
            raise ValueError(f"GCM IV must be {IV_SIZE} bytes")
        size = len(record) - TAG_SIZE
        if size < 0:
            raise TagMismatch("record shorter than the tag")
        if _GHASH is None:  # pragma: no cover - old or unusual pycryptodome
            cipher = AES.new(self._key, AES.MODE_GCM, nonce=iv)
            cipher.update(ad)
            ciphertext = bytes(record[:size])
            cipher.decrypt(ciphertext, output=record[:size])
            try:
                cipher.verify(record[size:])
            except ValueError:
                record[:size] = ciphertext
                raise TagMismatch("authentication failed") from None
            return
        if size <= SMALL_RECORD:
            mask, stream = self._small_stream(iv, size)
        else:
            mask, stream = self._ecb.encrypt(iv + _COUNTERS[0]), b""
        tag = (self._ghash(ad, record, size) ^ int.from_bytes(mask, "big")).to_bytes(16, "big")
        if not hmac.compare_digest(tag, record[size:]):
            raise TagMismatch("authentication failed")
        if size <= SMALL_RECORD:
            record[:size] = self._xor(record[:size], stream, size)
        else:
            self._ctr(iv).decrypt(record[:size], output=record[:size])

    def _ctr(self, iv: bytes) -> Any:
        return AES.new(self._key, AES.MODE_CTR, nonce=iv, initial_value=2)


FAST_GHASH = _GHASH is not None
