"""Error classes of the Bitcoin layer.

Every error carries a stable string ``code`` (listed in ``specs/payments.md``
§9 Error codes) so a node can send it to a peer or log it.  ``LocalBitcoinError`` means we
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


class ChannelParamsError(BitcoinError):
    """Channel terms are unusable (capacity, fee rate, dust limit, expiry or keys)."""

    code = "bad-channel-params"


class ChannelExhaustedError(LocalBitcoinError):
    """The payer asked to pay more than the channel has left (capacity minus fee)."""

    code = "channel-exhausted"


class InvalidAmountError(LocalBitcoinError):
    """An amount or fee argument is not a positive integer number of satoshis."""

    code = "invalid-amount"


class NothingToCloseError(LocalBitcoinError):
    """The payee holds no payment that gives it an output worth closing for."""

    code = "nothing-to-close"


class RefundFeeError(LocalBitcoinError):
    """A refund fee below the minimum relay fee or leaving a dust output."""

    code = "bad-refund-fee"


class PaymentError(RemoteBitcoinError):
    """Base of the payee's refusals of a payment (``specs/payments.md`` §9 Error codes)."""

    code = "payment-refused"


class WrongChannelError(PaymentError):
    """The payment names a different channel."""

    code = "wrong-channel"


class NonIncreasingTotalError(PaymentError):
    """The payment's cumulative total is not above the last accepted total."""

    code = "total-not-increasing"


class BeyondCapacityError(PaymentError):
    """The payment's total exceeds capacity minus the commitment fee."""

    code = "beyond-capacity"


class IncrementBelowOwedError(PaymentError):
    """The payment adds less than the payee is owed."""

    code = "increment-below-owed"


class BadSignatureError(PaymentError):
    """The payer's signature is malformed or does not sign this commitment."""

    code = "bad-signature"


class MalformedPaymentError(PaymentError, DecodeError):
    """A serialized payment does not decode."""

    code = "malformed-payment"
