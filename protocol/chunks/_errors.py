"""Errors raised by the chunk format (specs/chunks.md §9 Error codes).

Two kinds, following the house ``ProtocolError`` split: a caller that asks for
something impossible (bad parameters, a malformed link typed by a user) gets a
:class:`LocalChunkError`; bytes that came from storage or a peer and fail to
verify give an :class:`IntegrityError`, which always names the chunk address
(hex) so the bad chunk can be found and dropped.
"""

from __future__ import annotations


class ChunkError(Exception):
    """Base class of every error in :mod:`protocol.chunks`.

    Attributes:
        code: short, stable error code from specs/chunks.md §9 Error codes.
    """

    code = "chunk-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalChunkError(ChunkError, ValueError):
    """The caller passed a bad value (parameter, link text, key)."""

    code = "bad-input"


class LinkError(LocalChunkError):
    """A link or root string is malformed; the message says what is wrong."""

    code = "bad-link"


class IntegrityError(ChunkError):
    """Stored or received bytes failed verification: never use their output.

    Raised when a chunk does not hash to its address, fails AES-GCM
    authentication (corrupted, or the key is wrong), or decrypts to a manifest
    that breaks the format rules.
    """

    code = "integrity"

    def __init__(self, message: str, *, address: bytes | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.address = address
