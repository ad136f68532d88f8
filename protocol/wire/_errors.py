"""Error codes and the protocol error hierarchy (specs/wire.md §7 Error codes).

``LocalProtocolError`` means this side tried something the protocol forbids
(a bug in the caller); ``RemoteProtocolError`` means the peer sent bytes the
protocol forbids.  Both carry the ``ErrorCode`` to report in an ERROR frame.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Numeric error codes carried in ERROR messages (specs/wire.md §7 Error codes)."""

    # Session-level: the session is closed after these.
    MALFORMED = 1
    UNSUPPORTED_VERSION = 2
    UNKNOWN_MESSAGE_TYPE = 3
    FRAME_TOO_LARGE = 4
    DECRYPT_FAILED = 5
    HANDSHAKE_FAILED = 6
    IDENTITY_MISMATCH = 7
    UNEXPECTED_MESSAGE = 8
    INTERNAL = 9
    # Request-level: reply to one request, the session stays open.
    NOT_FOUND = 32
    OVER_QUOTA = 33
    INSUFFICIENT_PAYMENT = 34
    BAD_SIGNATURE = 35
    CHANNEL_UNKNOWN = 36
    CHANNEL_EXPIRED = 37
    CORRUPT_DATA = 38
    BUSY = 39


# Codes at or above this value answer one request and leave the session open.
FIRST_REQUEST_ERROR = 32


class ProtocolError(Exception):
    """A violation of the wire protocol.

    Attributes:
        code: the ErrorCode to send to the peer (if the session can still
            carry one) and to log.
    """

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)


class LocalProtocolError(ProtocolError):
    """This side asked for something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes the protocol forbids; drop the session."""
