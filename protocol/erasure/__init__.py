"""Erasure coding of stored files: stripes, shares, the stripe map (specs/erasure.md)."""

from ._audit import (
    DROP_BELOW,
    MAX_AUDIT_RANGE,
    SCHEDULE_RANDOM_SIZE,
    START_SCORE,
    AuditChallenge,
    AuditError,
    audit_answer,
    audit_delay,
    audit_passes,
    is_dropped,
    make_challenge,
    next_score,
    pick_share,
)
from ._renewal import MONTH_SECONDS, RENEW_AHEAD, RenewalCandidate, RenewalPlan, month_of, plan_renewals
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

__all__ = ["MONTH_SECONDS", "RENEW_AHEAD", "RenewalCandidate", "RenewalPlan", "month_of", "plan_renewals",
           "DROP_BELOW", "MAX_AUDIT_RANGE", "SCHEDULE_RANDOM_SIZE", "START_SCORE", "AuditChallenge", "AuditError",
           "audit_answer", "audit_delay", "audit_passes", "is_dropped", "make_challenge", "next_score", "pick_share",
           "DEFAULT_K", "DEFAULT_N", "MAX_N", "MAX_STRIPES", "NotEnoughShares", "Stripe", "StripeMap",
           "StripeMapError", "decode_stripe", "encode_stripe", "share_address"]
