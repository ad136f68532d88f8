"""Folder capabilities: write, read and verify links (specs/folders.md §4 Capabilities).

Tahoe-LAFS's chain of authority, one way only: the write link carries the
Ed25519 signing seed; the read key and the public key derive from it; the
read link carries the read key and the public key; the verify link only the
public key (enough for a host to find the folder's record, check its
signature and keep the ciphertext it names, never to read it).

Text form: ``mu:folder-w:``, ``mu:folder-r:`` or ``mu:folder-v:`` then
base58 of ``version || payload || checksum``, the checksum being the first
4 bytes of SHA-256 over the prefix and the rest, so a mistyped or truncated
link is refused rather than read as another folder.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import base58

from protocol.identity import Identity, IdentityError, PUBLIC_KEY_SIZE, SEED_SIZE

CAP_VERSION = 1
READ_KEY_SIZE = 32
CHUNK_SECRET_SIZE = 32
CHECKSUM_SIZE = 4
# Longest link text parsed: the read link's 1 + 64 + 4 bytes are 95 base58 characters.
MAX_CAP_CHARS = 160
WRITE_PREFIX = "mu:folder-w:"
READ_PREFIX = "mu:folder-r:"
VERIFY_PREFIX = "mu:folder-v:"
_B58_ALPHABET = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


class CapError(ValueError):
    """A folder link is malformed, mistyped or of the wrong kind."""


def _tagged(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


def read_key_from_seed(seed: bytes) -> bytes:
    """The folder's read key: HMAC-SHA256(seed, "mu:folder-read-key:v1") (§4.1 Derivations)."""
    return _tagged(seed, b"mu:folder-read-key:v1")


def chunk_secret_from_read_key(read_key: bytes) -> bytes:
    """The folder's chunk secret: HMAC-SHA256(read_key, "mu:folder-chunk-secret:v1") (§4.1 Derivations)."""
    return _tagged(read_key, b"mu:folder-chunk-secret:v1")


def chunk_list_secret(public_key: bytes) -> bytes:
    """The chunk secret of the folder's chunk lists: HMAC-SHA256(public_key, "mu:folder-chunk-list-secret:v1").

    From the public key, not the read key, so a verify-cap holder reads the
    lists (specs/folders.md §7.1 Chunk list); the label keeps list chunks
    apart from the folder's file chunks.
    """
    return _tagged(public_key, b"mu:folder-chunk-list-secret:v1")


def chunk_list_pad(public_key: bytes, root: bytes) -> bytes:
    """The pad of a chunk list's link key in the record value (specs/folders.md §7 Record value)."""
    return _tagged(chunk_list_secret(public_key), b"mu:folder-chunk-list-pad:v1" + root)


def _encode(prefix: str, payload: bytes) -> str:
    body = bytes([CAP_VERSION]) + payload
    checksum = hashlib.sha256(prefix.encode() + body).digest()[:CHECKSUM_SIZE]
    return prefix + base58.b58encode(body + checksum).decode()


def _decode(prefix: str, text: str, size: int) -> bytes:
    body_text = text[len(prefix):]
    if not body_text:
        raise CapError("the link has nothing after its prefix")
    bad = sorted(set(body_text) - _B58_ALPHABET)
    if bad:
        raise CapError(f"the link is not base58 after {prefix!r}: bad character(s) {''.join(bad)!r}")
    raw = base58.b58decode(body_text)
    body, checksum = raw[:-CHECKSUM_SIZE], raw[-CHECKSUM_SIZE:]
    if len(raw) <= CHECKSUM_SIZE or hashlib.sha256(prefix.encode() + body).digest()[:CHECKSUM_SIZE] != checksum:
        raise CapError("the link's checksum does not match: a character is mistyped or missing")
    if body[0:1] != bytes([CAP_VERSION]):
        raise CapError(f"unknown folder link version {body[0] if body else None} (this mu reads {CAP_VERSION})")
    if len(body) != 1 + size:
        raise CapError(f"the link carries {len(body) - 1} bytes, a {prefix!r} link carries {size}")
    return body[1:]


@dataclass(frozen=True, slots=True)
class VerifyCap:
    """The folder's public key: find, check and host its ciphertext."""

    public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_SIZE:
            raise CapError(f"a folder public key is {PUBLIC_KEY_SIZE} bytes")

    def to_string(self) -> str:
        return _encode(VERIFY_PREFIX, self.public_key)

    @property
    def verify_cap(self) -> VerifyCap:
        return self


@dataclass(frozen=True, slots=True)
class ReadCap:
    """Read key and public key: resolve, decrypt and restore every snapshot; never publish."""

    read_key: bytes = field(repr=False)
    public_key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.read_key, bytes) or len(self.read_key) != READ_KEY_SIZE:
            raise CapError(f"a folder read key is {READ_KEY_SIZE} bytes")
        VerifyCap(self.public_key)

    def to_string(self) -> str:
        return _encode(READ_PREFIX, self.read_key + self.public_key)

    @property
    def chunk_secret(self) -> bytes:
        return chunk_secret_from_read_key(self.read_key)

    @property
    def verify_cap(self) -> VerifyCap:
        return VerifyCap(self.public_key)

    @property
    def read_cap(self) -> ReadCap:
        return self


@dataclass(frozen=True, slots=True)
class WriteCap:
    """The Ed25519 signing seed, from which the read key and the public key derive."""

    seed: bytes = field(repr=False)
    public_key: bytes = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_SIZE:
            raise CapError(f"a folder signing seed is {SEED_SIZE} bytes")
        try:
            object.__setattr__(self, "public_key", Identity(self.seed).public_key)
        except IdentityError as exc:
            raise CapError(str(exc)) from None

    def to_string(self) -> str:
        return _encode(WRITE_PREFIX, self.seed)

    @property
    def read_key(self) -> bytes:
        return read_key_from_seed(self.seed)

    @property
    def read_cap(self) -> ReadCap:
        return ReadCap(self.read_key, self.public_key)

    @property
    def chunk_secret(self) -> bytes:
        return chunk_secret_from_read_key(self.read_key)

    @property
    def verify_cap(self) -> VerifyCap:
        return VerifyCap(self.public_key)


FolderCap = WriteCap | ReadCap | VerifyCap


def parse_cap(text: str) -> FolderCap:
    """Parse any folder link.

    Raises:
        CapError: not a folder link, a bad character, a wrong checksum or
            length; the message says which, and never repeats the secret.
    """
    if not isinstance(text, str):
        raise CapError("a folder link is text")
    text = text.strip()
    if len(text) > MAX_CAP_CHARS:
        raise CapError(f"a folder link is at most {MAX_CAP_CHARS} characters")
    if text.startswith(WRITE_PREFIX):
        return WriteCap(_decode(WRITE_PREFIX, text, SEED_SIZE))
    if text.startswith(READ_PREFIX):
        raw = _decode(READ_PREFIX, text, READ_KEY_SIZE + PUBLIC_KEY_SIZE)
        return ReadCap(raw[:READ_KEY_SIZE], raw[READ_KEY_SIZE:])
    if text.startswith(VERIFY_PREFIX):
        return VerifyCap(_decode(VERIFY_PREFIX, text, PUBLIC_KEY_SIZE))
    raise CapError(f"a folder link starts with {WRITE_PREFIX!r}, {READ_PREFIX!r} or {VERIFY_PREFIX!r}")


def parse_read_cap(text: str) -> ReadCap:
    """A write or read link, as the read cap it grants (restore, log, diff)."""
    cap = parse_cap(text)
    if isinstance(cap, VerifyCap):
        raise CapError("a verify link cannot read the folder: give its read or write link")
    return cap.read_cap


def parse_write_cap(text: str) -> WriteCap:
    """A write link (snapshot); a read or verify link is refused."""
    cap = parse_cap(text)
    if not isinstance(cap, WriteCap):
        raise CapError("publishing a snapshot needs the folder's write link (mu:folder-w:...)")
    return cap
