"""Error classes of the Bitcoin layer.

Every error carries a stable string ``code`` (listed in ``specs/payments.md``
§9) so a node can send it to a peer or log it.  ``LocalBitcoinError`` means we
were asked to do something invalid (a caller bug or a refused request);
``RemoteBitcoinError`` means bytes or values from a peer were bad.  Both derive
from ``ValueError`` so callers that only care about "bad input" can catch that.
"""

from __future__ import annotations


class BitcoinError(ValueError):
    """Base class of every error raised under ``protocol.bitcoin``."""

    code: str = "bitcoin-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalBitcoinError(BitcoinError):
    """We were asked to build or sign something the rules forbid."""

    code = "local-error"


class RemoteBitcoinError(BitcoinError):
    """A peer (or an untrusted byte string) supplied invalid data."""

    code = "remote-error"


class DecodeError(RemoteBitcoinError):
    """Serialized bytes are truncated, oversized, non-minimal or have trailing data."""

    code = "malformed"


class BadKeyError(RemoteBitcoinError):
    """A public key, private key or signature encoding is invalid."""

    code = "bad-key"


class AddressError(RemoteBitcoinError):
    """A bech32 address failed to decode or names an unsupported program."""

    code = "bad-address"
