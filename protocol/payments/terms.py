"""A host's terms, sent in HELLO, and what a chunk costs under them.

The terms are signed by the host's Ed25519 identity key so that a session
peer cannot be handed someone else's payment key (specs/payments.md §Terms).
Prices are integer sats per MiB (2**20 bytes); a chunk costs its size times
the price divided by one MiB, rounded UP per chunk, so a non-empty chunk at
a non-zero price never costs 0 and a host is never paid less than its price.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from protocol.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, verify_signature
from protocol.payments.errors import LocalPaymentError, PaymentErrorCode

MIB = 1 << 20
TERMS_TAG = b"mu:terms:v1"
PAYMENT_PUBKEY_SIZE = 33  # compressed secp256k1 point
# Upper bounds a receiver enforces on each field (specs/payments.md §Terms).
MAX_PRICE_PER_MIB = 10**8  # 1 BTC per MiB
MAX_AMOUNT = 21 * 10**14  # all bitcoin, in sats
MAX_BLOCKS = 52_560  # about a year of blocks
MAX_RETENTION_SECONDS = 10 * 365 * 86_400
MAX_FEE_RATE = 10_000  # sat/vB
MAX_OFFER = 1 << 60  # bytes offered to reciprocating peers (an exbibyte)
_OFFER = struct.Struct(">Q")

# Field name, struct format, upper bound: the order is the signed encoding.
_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("price_per_mib_get", "Q", MAX_PRICE_PER_MIB),
    ("price_per_mib_put", "Q", MAX_PRICE_PER_MIB),
    ("retention_seconds", "Q", MAX_RETENTION_SECONDS),
    ("free_allowance", "Q", MAX_AMOUNT),
    ("min_capacity", "Q", MAX_AMOUNT),
    ("expiry_window", "I", MAX_BLOCKS),
    ("min_confirmations", "I", MAX_BLOCKS),
    ("fee_rate", "I", MAX_FEE_RATE),
)
_LAYOUT = struct.Struct(">" + "".join(fmt for _, fmt, _ in _FIELDS))


def chunk_price(size: int, price_per_mib: int) -> int:
    """Price in sats of ``size`` bytes at ``price_per_mib``, rounded up."""
    if size < 0 or price_per_mib < 0:
        raise ValueError("size and price must be non-negative")
    return -(-size * price_per_mib // MIB)


@dataclass(frozen=True, slots=True, kw_only=True)
class Terms:
    """A host's prices and channel limits (all amounts int sats).

    Attributes:
        price_per_mib_get: sats per MiB served on GET.
        price_per_mib_put: sats per MiB accepted on PUT, for ``retention_seconds``.
        retention_seconds: how long a paid PUT is kept.
        free_allowance: sats of service each peer gets before paying.
        min_capacity: smallest channel the host accepts.
        expiry_window: blocks that must remain before a channel's expiry at open.
        min_confirmations: confirmations the funding output needs.
        fee_rate: sat/vB of the commitment (close) transaction.
        payment_pubkey: compressed secp256k1 key the host is paid to.
        identity_key: the host's Ed25519 identity public key.
        offer: bytes the host stores for peers that store for it (0: none; its
            peers then pay for everything, specs/payments.md §Service balance).
        signature: identity signature over ``signed_bytes()``.
    """

    price_per_mib_get: int
    price_per_mib_put: int
    retention_seconds: int
    free_allowance: int
    min_capacity: int
    expiry_window: int
    min_confirmations: int
    fee_rate: int
    payment_pubkey: bytes
    identity_key: bytes
    offer: int = 0
    signature: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        for name, _, bound in _FIELDS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= bound:
                raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, f"terms field {name} out of range: {value!r}")
        if type(self.offer) is not int or not 0 <= self.offer <= MAX_OFFER:
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, f"terms field offer out of range: {self.offer!r}")
        if not isinstance(self.payment_pubkey, bytes) or len(self.payment_pubkey) != PAYMENT_PUBKEY_SIZE \
                or self.payment_pubkey[0] not in (2, 3):
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, "payment pubkey must be a compressed point")
        if not isinstance(self.identity_key, bytes) or len(self.identity_key) != PUBLIC_KEY_SIZE:
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, "identity key must be 32 bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) not in (0, SIGNATURE_SIZE):
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, "terms signature must be 64 bytes")

    def signed_bytes(self) -> bytes:
        """``TERMS_TAG || identity_key || payment_pubkey || fields [|| offer]`` (big-endian).

        ``offer`` is signed only when non-zero, so the terms of a node that
        offers nothing are signed exactly as before it existed.
        """
        values = _LAYOUT.pack(*(getattr(self, name) for name, _, _ in _FIELDS))
        offer = _OFFER.pack(self.offer) if self.offer else b""
        return TERMS_TAG + self.identity_key + self.payment_pubkey + values + offer

    def signed(self, identity: Identity) -> Terms:
        """A copy signed by ``identity`` (whose key must be ``identity_key``)."""
        if identity.public_key != self.identity_key:
            raise ValueError("signing identity does not match the terms' identity key")
        return _replace_signature(self, identity.sign(self.signed_bytes()))

    def verify(self) -> None:
        """Raise LocalPaymentError(BAD_TERMS) unless the signature verifies."""
        if not verify_signature(self.identity_key, self.signed_bytes(), self.signature):
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, "terms signature does not verify")

    def get_price(self, size: int) -> int:
        """Sats for serving ``size`` bytes."""
        return chunk_price(size, self.price_per_mib_get)

    def put_price(self, size: int) -> int:
        """Sats for storing ``size`` bytes for ``retention_seconds``."""
        return chunk_price(size, self.price_per_mib_put)

    def to_wire(self) -> dict[str, Any]:
        """The HELLO ``terms`` map (specs/payments.md §Terms)."""
        out: dict[str, Any] = {name: getattr(self, name) for name, _, _ in _FIELDS}
        out["payment_pubkey"] = self.payment_pubkey
        if self.offer:  # absent means 0, so peers that predate it read these terms unchanged
            out["offer"] = self.offer
        out["signature"] = self.signature
        return out

    @classmethod
    def from_wire(cls, value: object, identity_key: bytes) -> Terms:
        """Parse and verify a HELLO ``terms`` map sent by ``identity_key``'s owner.

        Raises:
            LocalPaymentError(BAD_TERMS): missing, extra or out-of-range fields,
            an ``offer`` of 0 (it is left out instead: one encoding per terms),
            or a signature that does not verify.
        """
        expected = {name for name, _, _ in _FIELDS} | {"payment_pubkey", "signature"}
        if not isinstance(value, dict) or set(value) - {"offer"} != expected:
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, "terms map has missing or unknown fields")
        if "offer" in value and value["offer"] == 0:
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, "terms offer of 0 must be left out")
        terms = cls(identity_key=identity_key, **value)
        terms.verify()
        return terms


def _replace_signature(terms: Terms, signature: bytes) -> Terms:
    values = {name: getattr(terms, name) for name in Terms.__dataclass_fields__}
    values["signature"] = signature
    return Terms(**values)
