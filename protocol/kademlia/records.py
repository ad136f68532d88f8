"""Signed provider and contact records, and announce tokens (specs/dht.md §7).

A provider record says "the node with this identity key serves the chunk
whose DHT key is K at host:tcp_port on these payment terms until T".  A
contact record says "the node with this identity key listens on these ports
and takes payment to this key".  Both are msgpack arrays ending in an Ed25519
signature by the identity key over a domain-separated encoding of the other
fields; the signer's node ID is SHA-256 of the key cut to 20 bytes, so a
record proves which node ID it speaks for.  Stock ``kademlia`` nodes have no
key and cannot make either record: that is how mu nodes tell each other apart
from plain contacts (§3.2).

Announce tokens follow BitTorrent's BEP 5: a node hands out
HMAC(secret, requester IP) with its ``mu_get_providers`` replies and accepts a
``mu_announce`` only with a token minted for the announcer's IP under the
current or the previous secret.  The caller rotates the secrets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from protocol.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Identity, node_id_from_public_key, verify_signature
from protocol.kademlia.ids import KademliaError, check_host, check_id, check_port
from protocol.kademlia.wire import ErrorCode, RemoteProtocolError, pack, unpack_body

RECORD_VERSION = 1
PROVIDER_DOMAIN = b"mu:dht-provider:v1\x00"
CONTACT_DOMAIN = b"mu:dht-contact:v1\x00"
TOKEN_DOMAIN = b"mu:dht-token:v1\x00"
#: Longest lifetime a provider record may claim (specs/dht.md §7.1).
MAX_PROVIDER_TTL = 48 * 3600
#: Lifetime given to provider records by default; republished at half of it.
DEFAULT_PROVIDER_TTL = 12 * 3600
#: Clock difference tolerated between announcer and storer, seconds.
MAX_CLOCK_SKEW = 300
#: Entries in a payment-terms map, and its packed size (specs/dht.md §7.1).
MAX_TERMS_ENTRIES = 16
MAX_TERMS_SIZE = 512
#: Longest encoded record of either kind.
MAX_RECORD_SIZE = 1024
#: Bytes of an announce token.
TOKEN_SIZE = 16
#: Bytes of a token secret.
TOKEN_SECRET_SIZE = 32
#: Compressed secp256k1 payment key, or none.
PAYMENT_PUBKEY_SIZE = 33


def _bad(code: ErrorCode, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(code, message)


def check_terms(terms: object) -> dict[str, object]:
    """Payment terms: a small map of short str keys to int, str, bytes or bool."""
    if not isinstance(terms, dict) or len(terms) > MAX_TERMS_ENTRIES:
        raise _bad(ErrorCode.BAD_ARGUMENTS, f"terms must be a map of at most {MAX_TERMS_ENTRIES} entries")
    for key, value in terms.items():
        if not isinstance(key, str) or not 0 < len(key) <= 32:
            raise _bad(ErrorCode.BAD_ARGUMENTS, "terms keys must be strings of 1..32 characters")
        if not isinstance(value, (int, str, bytes)):
            raise _bad(ErrorCode.BAD_ARGUMENTS, f"terms value for {key!r} must be int, str or bytes")
    canonical = {k: terms[k] for k in sorted(terms)}
    if len(pack(canonical)) > MAX_TERMS_SIZE:
        raise _bad(ErrorCode.TOO_LARGE, f"terms exceed {MAX_TERMS_SIZE} bytes")
    return canonical


def _decode_array(data: object, length: int, what: str) -> list[object]:
    if not isinstance(data, bytes) or len(data) > MAX_RECORD_SIZE:
        raise _bad(ErrorCode.TOO_LARGE, f"{what} must be bytes of at most {MAX_RECORD_SIZE}")
    fields = unpack_body(data)
    if not isinstance(fields, list) or len(fields) != length or fields[0] != RECORD_VERSION:
        raise _bad(ErrorCode.MALFORMED, f"{what} is not a version-{RECORD_VERSION} array of {length} fields")
    return fields


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise _bad(ErrorCode.MALFORMED, f"{what} must be a non-negative integer")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderRecord:
    """A signed claim that ``node_id`` serves the chunk with DHT ``key``."""

    key: bytes
    public_key: bytes
    host: str
    tcp_port: int
    terms: Mapping[str, object]
    expires_at: int
    signature: bytes = field(default=b"", repr=False)

    @property
    def node_id(self) -> bytes:
        """The provider's node ID, derived from its identity key."""
        return node_id_from_public_key(self.public_key)

    def signed_bytes(self) -> bytes:
        """What the signature covers (specs/dht.md §7.1)."""
        fields = [self.key, self.public_key, self.host, self.tcp_port, dict(self.terms), self.expires_at]
        return PROVIDER_DOMAIN + pack(fields)

    def serialize(self) -> bytes:
        """The record as sent in ``mu_announce`` and ``mu_get_providers``."""
        return pack([RECORD_VERSION, self.key, self.public_key, self.host, self.tcp_port,
                     dict(self.terms), self.expires_at, self.signature])

    @classmethod
    def create(cls, identity: Identity, *, key: bytes, host: str, tcp_port: int,
               terms: Mapping[str, object], expires_at: int) -> ProviderRecord:
        """Build and sign a record with ``identity``."""
        try:
            unsigned = cls(key=check_id(key, "key"), public_key=identity.public_key, host=check_host(host),
                           tcp_port=check_port(tcp_port, "tcp port"), terms=check_terms(dict(terms)),
                           expires_at=_check_int(expires_at, "expiry"))
        except (KademliaError, RemoteProtocolError) as exc:
            raise ValueError(f"invalid provider record: {exc}") from None
        return cls(key=unsigned.key, public_key=unsigned.public_key, host=unsigned.host,
                   tcp_port=unsigned.tcp_port, terms=unsigned.terms, expires_at=unsigned.expires_at,
                   signature=identity.sign(unsigned.signed_bytes()))

    @classmethod
    def parse(cls, data: object, *, now: float) -> ProviderRecord:
        """Decode and verify a record from a peer: shape, signature, expiry."""
        f = _decode_array(data, 8, "provider record")
        try:
            record = cls(key=check_id(f[1], "key"), public_key=_check_key(f[2]), host=check_host(f[3]),
                         tcp_port=check_port(f[4], "tcp port"), terms=check_terms(f[5]),
                         expires_at=_check_int(f[6], "expiry"), signature=_check_sig(f[7]))
        except KademliaError as exc:
            raise _bad(ErrorCode.MALFORMED, f"provider record: {exc}") from None
        if not verify_signature(record.public_key, record.signed_bytes(), record.signature):
            raise _bad(ErrorCode.BAD_SIGNATURE, "provider record signature does not verify")
        if record.expires_at <= now:
            raise _bad(ErrorCode.EXPIRED, "provider record has expired")
        if record.expires_at > now + MAX_PROVIDER_TTL + MAX_CLOCK_SKEW:
            raise _bad(ErrorCode.BAD_ARGUMENTS, f"provider record lives longer than {MAX_PROVIDER_TTL} s")
        return record


@dataclass(frozen=True, slots=True)
class ContactInfo:
    """What a node advertises about itself beyond its UDP address."""

    tcp_port: int
    payment_pubkey: bytes = b""
    host: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactRecord:
    """A node's signed contact details (specs/dht.md §7.2)."""

    public_key: bytes
    host: str
    udp_port: int
    tcp_port: int
    payment_pubkey: bytes
    issued_at: int
    signature: bytes = field(default=b"", repr=False)

    @property
    def node_id(self) -> bytes:
        return node_id_from_public_key(self.public_key)

    def signed_bytes(self) -> bytes:
        fields = [self.public_key, self.host, self.udp_port, self.tcp_port, self.payment_pubkey, self.issued_at]
        return CONTACT_DOMAIN + pack(fields)

    def serialize(self) -> bytes:
        return pack([RECORD_VERSION, self.public_key, self.host, self.udp_port, self.tcp_port,
                     self.payment_pubkey, self.issued_at, self.signature])

    @classmethod
    def create(cls, identity: Identity, *, host: str, udp_port: int, info: ContactInfo, issued_at: int) -> ContactRecord:
        """Build and sign our own contact record."""
        if info.payment_pubkey and len(info.payment_pubkey) != PAYMENT_PUBKEY_SIZE:
            raise ValueError("payment pubkey must be 33 bytes (compressed secp256k1) or empty")
        unsigned = cls(public_key=identity.public_key, host=check_host(info.host or host),
                       udp_port=check_port(udp_port), tcp_port=check_port(info.tcp_port, "tcp port"),
                       payment_pubkey=info.payment_pubkey, issued_at=issued_at)
        return cls(public_key=unsigned.public_key, host=unsigned.host, udp_port=unsigned.udp_port,
                   tcp_port=unsigned.tcp_port, payment_pubkey=unsigned.payment_pubkey,
                   issued_at=issued_at, signature=identity.sign(unsigned.signed_bytes()))

    @classmethod
    def parse(cls, data: object) -> ContactRecord:
        """Decode and verify a contact record from a peer."""
        f = _decode_array(data, 8, "contact record")
        try:
            pay = f[5]
            if not isinstance(pay, bytes) or len(pay) not in (0, PAYMENT_PUBKEY_SIZE):
                raise KademliaError("payment pubkey must be 0 or 33 bytes")
            record = cls(public_key=_check_key(f[1]), host=check_host(f[2]), udp_port=check_port(f[3]),
                         tcp_port=check_port(f[4], "tcp port"), payment_pubkey=pay,
                         issued_at=_check_int(f[6], "issued_at"), signature=_check_sig(f[7]))
        except KademliaError as exc:
            raise _bad(ErrorCode.MALFORMED, f"contact record: {exc}") from None
        if not verify_signature(record.public_key, record.signed_bytes(), record.signature):
            raise _bad(ErrorCode.BAD_SIGNATURE, "contact record signature does not verify")
        return record


def _check_key(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_SIZE:
        raise KademliaError("identity key must be 32 bytes")
    return value


def _check_sig(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != SIGNATURE_SIZE:
        raise KademliaError("signature must be 64 bytes")
    return value


def make_token(secret: bytes, ip: str) -> bytes:
    """The announce token for requests from ``ip`` under ``secret`` (BEP 5)."""
    return hmac.new(secret, TOKEN_DOMAIN + ip.encode(), hashlib.sha256).digest()[:TOKEN_SIZE]


def check_token(token: object, ip: str, secrets: Sequence[bytes]) -> bool:
    """True if ``token`` was minted for ``ip`` under any of ``secrets`` (current, previous)."""
    if not isinstance(token, bytes) or len(token) != TOKEN_SIZE:
        return False
    return any(hmac.compare_digest(token, make_token(s, ip)) for s in secrets)
