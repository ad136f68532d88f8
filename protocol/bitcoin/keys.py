"""secp256k1 keys and ECDSA signatures through coincurve (libsecp256k1).

Signatures are strict DER (BIP 66) with low S (BIP 146 / Bitcoin Core's
LOW_S policy).  Signing is deterministic (RFC 6979, libsecp256k1's default
nonce function), which libsecp256k1 always returns in low-S form.
Verification checks the encoding rules in Python first, so a malleated or
sloppy signature is refused before libsecp256k1 sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import coincurve
from Crypto.Hash import RIPEMD160

from protocol.bitcoin.errors import BadKeyError
from protocol.bitcoin.serialize import sha256

# Curve order n of secp256k1 (SEC 2 §2.4.1) and the low-S bound n/2.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = CURVE_ORDER // 2

COMPRESSED_PUBKEY_SIZE = 33
# Longest strict-DER ECDSA signature: 0x30 len 0x02 33 r 0x02 33 s.
MAX_DER_SIGNATURE_SIZE = 72


def hash160(data: bytes) -> bytes:
    """RIPEMD-160 of SHA-256: the 20-byte key hash in P2WPKH programs."""
    return RIPEMD160.new(sha256(data)).digest()


def is_strict_der(sig: bytes) -> bool:
    """BIP 66 strict DER check of a bare signature (no sighash byte).

    Follows the rules listed in BIP 66 ("DER encoding reference"): sequence
    tag and length, two positive minimally-encoded INTEGERs, nothing else.
    """
    n = len(sig)
    if n < 8 or n > MAX_DER_SIGNATURE_SIZE:
        return False
    if sig[0] != 0x30 or sig[1] != n - 2:
        return False
    if sig[2] != 0x02:
        return False
    len_r = sig[3]
    if len_r == 0 or 5 + len_r >= n:
        return False
    if sig[4 + len_r] != 0x02:
        return False
    len_s = sig[5 + len_r]
    if len_s == 0 or len_r + len_s + 6 != n:
        return False
    r = sig[4 : 4 + len_r]
    s = sig[6 + len_r :]
    for part in (r, s):
        if part[0] & 0x80:
            return False  # negative
        if len(part) > 1 and part[0] == 0 and not part[1] & 0x80:
            return False  # superfluous leading zero
    return True


def der_s_value(sig: bytes) -> int:
    """The S integer of a strict-DER signature (caller checked :func:`is_strict_der`)."""
    len_r = sig[3]
    return int.from_bytes(sig[6 + len_r :], "big")


def is_low_s(sig: bytes) -> bool:
    """True if a strict-DER signature's S is at most n/2 (Bitcoin Core's LOW_S)."""
    s = der_s_value(sig)
    return 1 <= s <= HALF_ORDER


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A compressed secp256k1 public key (33 bytes, prefix 02 or 03)."""

    data: bytes
    # The parsed libsecp256k1 key, cached so verification does not reparse it.
    _point: coincurve.PublicKey = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.data) != COMPRESSED_PUBKEY_SIZE or self.data[0] not in (2, 3):
            raise BadKeyError("public key must be 33 bytes, compressed (02/03 prefix)")
        try:
            point = coincurve.PublicKey(self.data)
        except ValueError as exc:
            raise BadKeyError("public key is not a point on secp256k1") from exc
        object.__setattr__(self, "_point", point)


    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        try:
            return cls(bytes.fromhex(text))
        except ValueError as exc:
            if isinstance(exc, BadKeyError):
                raise
            raise BadKeyError("public key hex is invalid") from exc

    def hex(self) -> str:
        return self.data.hex()

    def hash160(self) -> bytes:
        """HASH160 of the compressed encoding (the P2WPKH program)."""
        return hash160(self.data)

    def verify(self, digest: bytes, signature: bytes) -> bool:
        """Check a strict-DER, low-S ECDSA ``signature`` over a 32-byte ``digest``.

        Returns False (never raises) for any malformed or invalid signature.
        """
        if len(digest) != 32 or not is_strict_der(signature) or not is_low_s(signature):
            return False
        try:
            return bool(self._point.verify(signature, digest, hasher=None))
        except ValueError:
            return False

    def __repr__(self) -> str:
        return f"PublicKey({self.data.hex()})"


@dataclass(frozen=True, slots=True, repr=False)
class PrivateKey:
    """A secp256k1 secret scalar (32 bytes, 1 <= k < n)."""

    secret: bytes
    _key: coincurve.PrivateKey = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise BadKeyError("private key must be 32 bytes")
        k = int.from_bytes(self.secret, "big")
        if not 1 <= k < CURVE_ORDER:
            raise BadKeyError("private key out of range [1, n)")
        object.__setattr__(self, "_key", coincurve.PrivateKey(self.secret))

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        """Derive a key from caller-supplied random bytes (tests, deterministic fixtures).

        SHA-256 of the seed is used as the scalar; the 2**-128 chance of it
        being out of range makes this raise rather than loop.
        """
        return cls(sha256(b"mu:bitcoin-key:v1" + seed))

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self._key.public_key.format(compressed=True))

    def sign(self, digest: bytes) -> bytes:
        """Deterministic (RFC 6979) ECDSA over a 32-byte digest; strict DER, low S."""
        if len(digest) != 32:
            raise ValueError("digest must be 32 bytes")
        return bytes(self._key.sign(digest, hasher=None))

    def __repr__(self) -> str:
        return f"PrivateKey(<secret>, public={self.public_key.hex()})"
