"""Erasure coding of stored files: stripes, shares, the stripe map (specs/erasure.md)."""

from ._stripes import (
    DEFAULT_K,
    DEFAULT_N,
    MAX_N,
    MAX_STRIPES,
    NotEnoughShares,
    Stripe,
    StripeMap,
    StripeMapError,
    decode_stripe,
    encode_stripe,
    share_address,
)

__all__ = ["DEFAULT_K", "DEFAULT_N", "MAX_N", "MAX_STRIPES", "NotEnoughShares", "Stripe", "StripeMap",
           "StripeMapError", "decode_stripe", "encode_stripe", "share_address"]
