"""Links: the capability strings users share (specs/chunks.md §7 Links).

``mu:<base58 root>#<base58 key>`` is a read capability: it names the root
chunk and carries the file key. Without the ``#key`` part (or as a bare
base58 root) it is a verify capability: enough to fetch, check and host the
ciphertext, not to read it (Tahoe-LAFS read cap vs verify cap).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import base58

from ._sizes import ADDRESS_SIZE, KEY_SIZE
from ._errors import LinkError

SCHEME = "mu:"
# Longest text we try to parse: scheme + two base58 fields of 32 bytes (<= 44
# characters each) + '#', with slack for whitespace around it.
MAX_LINK_CHARS = 128
_B58_ALPHABET = set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def decode_base58_field(text: str, size: int, what: str) -> bytes:
    """Decode ``text`` as base58 of exactly ``size`` bytes, or raise LinkError naming ``what``."""
    if not text:
        raise LinkError(f"{what} is empty")
    bad = sorted(set(text) - _B58_ALPHABET)
    if bad:
        raise LinkError(f"{what} is not base58: bad character(s) {''.join(bad)!r}")
    raw = base58.b58decode(text)
    if len(raw) != size:
        raise LinkError(f"{what} must decode to {size} bytes, got {len(raw)}")
    return raw


def parse_key(text: str) -> bytes:
    """Parse a base58 file key given on its own (``mu get --key``)."""
    if not isinstance(text, str):
        raise LinkError("a key is text")
    return decode_base58_field(text.strip(), KEY_SIZE, "key")


@dataclass(frozen=True, slots=True)
class Link:
    """A file capability: its root address and, for a read cap, its key."""

    root: bytes
    # Kept out of repr so a link in a log or traceback does not leak the key.
    key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.root, bytes) or len(self.root) != ADDRESS_SIZE:
            raise LinkError(f"root must be {ADDRESS_SIZE} bytes")
        if self.key is not None and (not isinstance(self.key, bytes) or len(self.key) != KEY_SIZE):
            raise LinkError(f"key must be {KEY_SIZE} bytes")

    @classmethod
    def parse(cls, text: str) -> Link:
        """Parse ``mu:ROOT#KEY``, ``mu:ROOT`` or a bare base58 ``ROOT``.

        Raises:
            LinkError: the text is malformed; the message says which part.
        """
        if not isinstance(text, str):
            raise LinkError("a link is text")
        text = text.strip()
        if len(text) > MAX_LINK_CHARS:
            raise LinkError(f"link is longer than {MAX_LINK_CHARS} characters")
        if text.startswith(SCHEME):
            body = text[len(SCHEME):]
        elif ":" in text:
            raise LinkError(f"link must start with {SCHEME!r}, got {text.split(':', 1)[0]!r}:")
        else:
            body = text
        root_text, sep, key_text = body.partition("#")
        root = decode_base58_field(root_text, ADDRESS_SIZE, "root")
        if not sep:
            return cls(root)
        return cls(root, decode_base58_field(key_text, KEY_SIZE, "key"))

    @property
    def verify_cap(self) -> Link:
        """The same link without its key."""
        return Link(self.root)

    @property
    def root_text(self) -> str:
        """The root in base58: what a node fetches by."""
        return base58.b58encode(self.root).decode()

    def __str__(self) -> str:
        if self.key is None:
            return SCHEME + self.root_text
        return f"{SCHEME}{self.root_text}#{base58.b58encode(self.key).decode()}"
