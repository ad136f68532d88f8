"""Storage audits: the challenge, the answer, the owner's check and host scores
(specs/erasure.md §7 Audits).

The owner of a file kept its chunks (it added or pinned them), so it can
rebuild any share of any stripe (:func:`protocol.erasure.encode_stripe`) and
check an answer over a range it picked with a nonce it never used before.
No per-share state is kept and challenges never run out (unlike
precomputed challenges), and the answer is one hash (unlike a Merkle proof).
The cost is one stripe's encoding per audit on the owner, a few
milliseconds.

The answer is ``H("mu:audit:v1" ‖ address ‖ nonce ‖ offset ‖ length ‖ share[offset:offset+length])``:
the host needs those very bytes now, and the fresh nonce stops it from
replaying an answer it computed before deleting the share.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

from protocol.wire import AUDIT_NONCE_SIZE, MAX_AUDIT_LENGTH

NONCE_SIZE = AUDIT_NONCE_SIZE
MAX_AUDIT_RANGE = MAX_AUDIT_LENGTH  # bytes hashed per audit at most (a host's cost, bounded)
AUDIT_TAG = b"mu:audit:v1"
# Host scores (specs/erasure.md §7.3): integers, a pass adds, a failure takes away; below DROP_BELOW the
# host is not used again for placement or audits.
START_SCORE = 100
PASS_GAIN = 10
FAIL_PENALTY = 60
DROP_BELOW = 50
MAX_SCORE = 100


class AuditError(ValueError):
    """An audit challenge that breaks the bounds of specs/erasure.md §7.1."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditChallenge:
    address: bytes
    nonce: bytes
    offset: int
    length: int

    def __post_init__(self) -> None:
        if len(self.address) != 32 or len(self.nonce) != NONCE_SIZE:
            raise AuditError("an audit names a 32-byte share address and a 32-byte nonce")
        if not (0 <= self.offset < 2**32 and 1 <= self.length <= MAX_AUDIT_RANGE):
            raise AuditError(f"audit range out of bounds (1..{MAX_AUDIT_RANGE} bytes)")


def make_challenge(address: bytes, share_size: int, random_bytes: bytes) -> AuditChallenge:
    """A challenge over a random range of a ``share_size``-byte share; ``random_bytes``: 40 fresh random bytes."""
    if len(random_bytes) != NONCE_SIZE + 8 or share_size < 1:
        raise AuditError("a challenge needs 40 random bytes and a non-empty share")
    length = min(share_size, MAX_AUDIT_RANGE)
    start, = struct.unpack(">Q", random_bytes[NONCE_SIZE:])
    offset = start % (share_size - length + 1)
    return AuditChallenge(address=address, nonce=random_bytes[:NONCE_SIZE], offset=offset, length=length)


def audit_answer(challenge: AuditChallenge, share: bytes | bytearray | memoryview) -> bytes:
    """The proof over ``share`` (what the host holds); a range past the end hashes what there is."""
    piece = bytes(memoryview(share)[challenge.offset:challenge.offset + challenge.length])
    return hashlib.sha256(AUDIT_TAG + challenge.address + challenge.nonce
                          + struct.pack(">II", challenge.offset, challenge.length) + piece).digest()


def audit_passes(challenge: AuditChallenge, share: bytes, answer: bytes) -> bool:
    """True if ``answer`` is the proof for ``share``, which the owner rebuilt and checked against its address."""
    return hashlib.sha256(share).digest() == challenge.address and answer == audit_answer(challenge, share)


def next_score(score: int, passed: bool) -> int:
    """A host's score after one audit (missed audits count as failed)."""
    return min(MAX_SCORE, score + PASS_GAIN) if passed else max(0, score - FAIL_PENALTY)


def is_dropped(score: int) -> bool:
    return score < DROP_BELOW


# The audit schedule (specs/erasure.md §7.5 The upkeep timer): audits arrive as a Poisson process, so a host
# cannot tell when the next one comes; each picks one share uniformly, so every share is audited once per
# audit period on average.
SCHEDULE_RANDOM_SIZE = 8  # random bytes per draw


def _draw(random_bytes: bytes) -> int:
    """A 64-bit integer from ``SCHEDULE_RANDOM_SIZE`` random bytes."""
    if len(random_bytes) != SCHEDULE_RANDOM_SIZE:
        raise AuditError(f"a draw takes {SCHEDULE_RANDOM_SIZE} random bytes")
    value: int = struct.unpack(">Q", random_bytes)[0]
    return value


def audit_delay(audit_period: float, shares: int, random_bytes: bytes) -> float:
    """Seconds until the next audit: exponential, mean ``audit_period / shares`` (``audit_period`` with none)."""
    if audit_period <= 0 or shares < 0:
        raise AuditError("the audit period is positive and the share count non-negative")
    unit = (_draw(random_bytes) + 1) / 2**64  # in (0, 1]: the logarithm is finite
    return -math.log(unit) * audit_period / max(1, shares)


def pick_share(shares: int, random_bytes: bytes) -> int:
    """A uniform index below ``shares`` (the bias of a 64-bit draw modulo a share count is below 2^-40)."""
    if shares < 1:
        raise AuditError("nothing to pick from")
    return _draw(random_bytes) % shares
