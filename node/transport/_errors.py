"""Errors raised by node.transport (trio style: Closed = we closed it, Broken = peer/network)."""

from __future__ import annotations

from protocol.wire import ErrorCode, ErrorMessage


class TransportError(Exception):
    """Base class; ``code`` is the wire ErrorCode involved, if any."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class SessionClosed(TransportError):
    """The session was closed on this side (shutdown, idle timeout)."""


class SessionBroken(TransportError):
    """The peer or the network failed: bad bytes, EOF, reset, failed handshake."""


class RequestError(TransportError):
    """The peer answered a request with ERROR.

    Attributes:
        error: the ErrorMessage received; ``owed`` is set with
            INSUFFICIENT_PAYMENT.
    """

    def __init__(self, error: ErrorMessage) -> None:
        try:
            name = ErrorCode(error.code).name
        except ValueError:
            name = str(error.code)
        super().__init__(f"peer refused: {name} {error.message}".strip(), error.code)
        self.error = error
        self.owed = error.owed


class BadChunk(TransportError):
    """A peer sent chunk bytes whose SHA-256 is not the address asked for."""


class RequestRefused(Exception):
    """Raised by a request handler to answer with ERROR instead of a reply."""

    def __init__(self, code: ErrorCode, message: str = "", owed: int | None = None) -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message
        self.owed = owed
