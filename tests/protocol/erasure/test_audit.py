"""Audit challenges and proofs (specs/erasure.md §7.1, §7.3)."""

from __future__ import annotations

import hashlib

import pytest

from protocol.erasure import (
    DROP_BELOW,
    MAX_AUDIT_RANGE,
    START_SCORE,
    AuditChallenge,
    AuditError,
    audit_answer,
    audit_passes,
    is_dropped,
    make_challenge,
    next_score,
)

SHARE = bytes(range(256)) * 1000
ADDRESS = hashlib.sha256(SHARE).digest()


def test_the_true_share_passes_and_anything_else_fails() -> None:
    challenge = make_challenge(ADDRESS, len(SHARE), b"n" * 32 + (12345).to_bytes(8, "big"))
    assert challenge.length == MAX_AUDIT_RANGE and challenge.offset + challenge.length <= len(SHARE)
    assert audit_passes(challenge, SHARE, audit_answer(challenge, SHARE))
    flipped = bytearray(SHARE)
    flipped[challenge.offset] ^= 1
    assert not audit_passes(challenge, SHARE, audit_answer(challenge, bytes(flipped)))
    assert not audit_passes(challenge, SHARE, bytes(32))
    # A proof computed under an old nonce is useless under a fresh one.
    fresh = make_challenge(ADDRESS, len(SHARE), b"m" * 32 + (12345).to_bytes(8, "big"))
    assert not audit_passes(fresh, SHARE, audit_answer(challenge, SHARE))


def test_small_shares_and_bounds() -> None:
    challenge = make_challenge(ADDRESS, 10, b"x" * 40)
    assert (challenge.offset, challenge.length) == (0, 10)
    with pytest.raises(AuditError):
        AuditChallenge(address=ADDRESS, nonce=b"n" * 32, offset=0, length=MAX_AUDIT_RANGE + 1)
    with pytest.raises(AuditError):
        make_challenge(ADDRESS, 10, b"short")


def test_one_failure_drops_a_fresh_host_and_passes_recover_slowly() -> None:
    assert not is_dropped(START_SCORE)
    assert is_dropped(next_score(START_SCORE, False))
    score = next_score(next_score(START_SCORE, True), False)
    assert score < START_SCORE and next_score(score, True) > score
    assert next_score(0, False) == 0 and DROP_BELOW > 0
