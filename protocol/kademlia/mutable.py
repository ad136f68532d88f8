"""Signed mutable records and their bounded store (specs/dht.md §7.3 Mutable record).

A mutable record is BitTorrent BEP 44's mutable item in mu's shape: an
Ed25519 public key, a sequence number, a value of at most
``MAX_MUTABLE_VALUE`` bytes and the key's signature over the other three.
It lives under ``mutable_key(public_key)`` on the k nodes closest to that key;
whoever holds the seed may replace it with a higher sequence number, and
nobody else can forge or alter one.  As in BEP 44, a storing node keeps the
highest sequence it has seen: a lower one is a replay, an equal one with
another value a conflict.

The store is bounded like the others (specs/dht.md §8 Stores): in total, per
source IP, and by time since the last store of the record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from protocol.identity import PUBLIC_KEY_SIZE, SEED_SIZE, SIGNATURE_SIZE, Identity, verify_signature
from protocol.kademlia.wire import ErrorCode, RemoteProtocolError, pack, unpack_body

#: Version in field 0 of the record (specs/dht.md §11 Versioning).
MUTABLE_VERSION = 1
#: Domain tag of the signature.
MUTABLE_DOMAIN = b"mu:dht-mutable:v1\x00"
#: Domain tag of the DHT key derived from a public key.
MUTABLE_KEY_DOMAIN = b"mu:dht-mutable-key:v1\x00"
#: Longest value, in bytes (BEP 44's bound).
MAX_MUTABLE_VALUE = 1000
#: Highest sequence number plus one: msgpack's signed 64-bit range.
SEQ_LIMIT = 2**63
#: Longest encoded record: header, key, seq, value and signature fit well under it.
MAX_MUTABLE_RECORD_SIZE = 1200
#: Mutable records held in total (specs/dht.md §8 Stores).
MAX_MUTABLE_RECORDS = 4096
#: Mutable records whose last new version came from one source IP.
MAX_MUTABLE_PER_PEER = 256
#: Seconds a held record lives unless stored again; publishers republish well within it.
MUTABLE_RECORD_TTL = 48 * 3600.0


def mutable_key(public_key: bytes) -> bytes:
    """The 20-byte DHT key a public key's record lives under.

    Tagged, so that it is never the node ID of a node using the same key.
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    return hashlib.sha256(MUTABLE_KEY_DOMAIN + public_key).digest()[:20]


@dataclass(frozen=True, slots=True)
class MutableRecord:
    """A signed (public key, seq, value) triple (specs/dht.md §7.3)."""

    public_key: bytes
    seq: int
    value: bytes
    signature: bytes = field(repr=False)

    @property
    def key(self) -> bytes:
        """The DHT key this record lives under."""
        return mutable_key(self.public_key)

    def signed_bytes(self) -> bytes:
        """What the signature covers."""
        return signed_bytes(self.public_key, self.seq, self.value)

    def verify(self) -> bool:
        """True if every field is within bounds and the signature verifies."""
        return (_well_formed(self.public_key, self.seq, self.value)
                and isinstance(self.signature, bytes) and len(self.signature) == SIGNATURE_SIZE
                and verify_signature(self.public_key, self.signed_bytes(), self.signature))

    def serialize(self) -> bytes:
        """The record as carried by ``mu_put_record`` and ``mu_get_record``."""
        return pack([MUTABLE_VERSION, self.public_key, self.seq, self.value, self.signature])

    @classmethod
    def parse(cls, data: object) -> MutableRecord:
        """Decode and verify a record from a peer.

        Raises:
            RemoteProtocolError: ``too_large`` for an oversized record or value,
                ``malformed`` for a wrong shape, ``bad_signature`` if the
                signature does not verify.
        """
        if not isinstance(data, bytes) or len(data) > MAX_MUTABLE_RECORD_SIZE:
            raise RemoteProtocolError(ErrorCode.TOO_LARGE,
                                      f"mutable record must be bytes of at most {MAX_MUTABLE_RECORD_SIZE}")
        fields = unpack_body(data)
        if not isinstance(fields, list) or len(fields) != 5 or fields[0] != MUTABLE_VERSION \
                or isinstance(fields[0], bool):
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"mutable record is not a version-{MUTABLE_VERSION} "
                                                           "array of 5 fields")
        _, public_key, seq, value, signature = fields
        if isinstance(value, bytes) and len(value) > MAX_MUTABLE_VALUE:
            raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"mutable value exceeds {MAX_MUTABLE_VALUE} bytes")
        if not (isinstance(public_key, bytes) and isinstance(value, bytes) and isinstance(seq, int)
                and _well_formed(public_key, seq, value)
                and isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE):
            raise RemoteProtocolError(ErrorCode.MALFORMED, "mutable record fields malformed")
        record = cls(public_key, seq, value, signature)
        if record.serialize() != data:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "mutable record is not canonically encoded")
        if not verify_signature(public_key, record.signed_bytes(), signature):
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, "mutable record signature does not verify")
        return record


def signed_bytes(public_key: bytes, seq: int, value: bytes) -> bytes:
    """The domain tag and the msgpack array ``[public_key, seq, value]``."""
    return MUTABLE_DOMAIN + pack([public_key, seq, value])


def _well_formed(public_key: object, seq: object, value: object) -> bool:
    return (isinstance(public_key, bytes) and len(public_key) == PUBLIC_KEY_SIZE
            and isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < SEQ_LIMIT
            and isinstance(value, bytes) and len(value) <= MAX_MUTABLE_VALUE)


def sign_mutable(seed: bytes, seq: int, value: bytes) -> MutableRecord:
    """Sign ``value`` as version ``seq`` of the record of the Ed25519 key made from ``seed``.

    Raises:
        ValueError: the seed is not 32 bytes, ``seq`` is outside 0..2**63-1 or
            ``value`` is longer than ``MAX_MUTABLE_VALUE``.
    """
    if len(seed) != SEED_SIZE:
        raise ValueError(f"seed must be {SEED_SIZE} bytes")
    identity = Identity(seed)
    if not _well_formed(identity.public_key, seq, value):
        raise ValueError(f"seq must be in 0..{SEQ_LIMIT - 1} and value bytes of at most {MAX_MUTABLE_VALUE}")
    return MutableRecord(identity.public_key, seq, value, identity.sign(signed_bytes(identity.public_key, seq, value)))


def check_update(held: MutableRecord | None, new: MutableRecord) -> bool:
    """May ``new`` replace ``held``?  True if newer, False if the very same record.

    Raises:
        RemoteProtocolError: ``old_sequence`` for a lower sequence number,
            ``sequence_conflict`` for an equal one with another value.
    """
    if held is None or new.seq > held.seq:
        return True
    if new.seq < held.seq:
        raise RemoteProtocolError(ErrorCode.OLD_SEQUENCE, f"sequence {new.seq} is below the held {held.seq}")
    if new.value != held.value:
        raise RemoteProtocolError(ErrorCode.SEQUENCE_CONFLICT, f"sequence {new.seq} is held with another value")
    return False


@dataclass(slots=True)
class _Held:
    record: MutableRecord
    owner: str
    expires_at: float


class MutableStore:
    """Verified mutable records, one per DHT key: the highest sequence seen."""

    def __init__(self, *, max_records: int = MAX_MUTABLE_RECORDS, max_per_peer: int = MAX_MUTABLE_PER_PEER,
                 ttl: float = MUTABLE_RECORD_TTL) -> None:
        self.max_records = max_records
        self.max_per_peer = max_per_peer
        self.ttl = ttl
        self._held: dict[bytes, _Held] = {}
        self._per_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def put(self, record: MutableRecord, peer_ip: str, now: float) -> bool:
        """Keep ``record`` (already verified) stored by ``peer_ip``; True if it was new.

        The same record stored again only restarts its lifetime (BEP 44).

        Raises:
            RemoteProtocolError: ``old_sequence`` or ``sequence_conflict``
                (see ``check_update``), ``over_limit`` when ``peer_ip`` or the
                store is full.
        """
        key = record.key
        old = self._held.get(key)
        if old is not None and old.expires_at <= now:
            self._drop(key)
            old = None
        if not check_update(old.record if old else None, record):
            assert old is not None
            old.expires_at = now + self.ttl
            return False
        if old is None or old.owner != peer_ip:
            if self._per_peer.get(peer_ip, 0) >= self.max_per_peer:
                raise RemoteProtocolError(ErrorCode.OVER_LIMIT,
                                          f"{peer_ip} already stores {self.max_per_peer} mutable records")
            if old is None and len(self._held) >= self.max_records:
                self.expire(now)
                if len(self._held) >= self.max_records:
                    raise RemoteProtocolError(ErrorCode.OVER_LIMIT, f"mutable store full ({self.max_records})")
        if old is not None:
            self._drop(key)
        self._held[key] = _Held(record, peer_ip, now + self.ttl)
        self._per_peer[peer_ip] = self._per_peer.get(peer_ip, 0) + 1
        return True

    def get(self, key: bytes, now: float) -> MutableRecord | None:
        """The live record under ``key``, or None."""
        held = self._held.get(key)
        if held is None:
            return None
        if held.expires_at <= now:
            self._drop(key)
            return None
        return held.record

    def expire(self, now: float) -> int:
        """Drop records past their lifetime; return how many went."""
        dead = [k for k, h in self._held.items() if h.expires_at <= now]
        for k in dead:
            self._drop(k)
        return len(dead)

    def _drop(self, key: bytes) -> None:
        held = self._held.pop(key)
        n = self._per_peer[held.owner] - 1
        if n:
            self._per_peer[held.owner] = n
        else:
            del self._per_peer[held.owner]
