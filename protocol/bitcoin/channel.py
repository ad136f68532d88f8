"""The unidirectional payment channel, both roles, as pure state machines.

``specs/payments.md`` §4 Scripts to §8 Channel states and rules is the normative description.  In short: the
payer funds a P2WSH output with :func:`channel_script`; each payment is the
payer's SIGHASH_ALL signature over the *commitment transaction* for a new
cumulative total, built deterministically from :class:`ChannelParams` and
the total alone, so both sides derive the same bytes.  The payee checks and
stores the best payment and can co-sign it into a closing transaction at any
time; after ``expiry_height`` the payer can take everything back with
:func:`refund_transaction`.  Nothing here reads a clock: the node compares
chain height with :func:`close_deadline`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from protocol.bitcoin.errors import (
    BadSignatureError,
    BeyondCapacityError,
    ChannelExhaustedError,
    ChannelParamsError,
    IncrementBelowOwedError,
    InvalidAmountError,
    MalformedPaymentError,
    NonIncreasingTotalError,
    NothingToCloseError,
    RefundFeeError,
    WrongChannelError,
)
from protocol.bitcoin.keys import MAX_DER_SIGNATURE_SIZE, PrivateKey, PublicKey
from protocol.bitcoin.policy import MAX_FEE_RATE, MIN_FEE_RATE, P2WPKH_DUST, dust_threshold, min_relay_fee
from protocol.bitcoin.script import channel_script, p2wpkh_script, p2wsh_script
from protocol.bitcoin.serialize import hash256, i64, sha256, u32, var_bytes
from protocol.bitcoin.sighash import SIGHASH_ALL, segwit_v0_sighash
from protocol.bitcoin.tx import MAX_MONEY, OutPoint, Transaction, TxIn, TxOut

CHANNEL_TX_VERSION = 2
COMMITMENT_SEQUENCE = 0xFFFFFFFF
COMMITMENT_LOCKTIME = 0
REFUND_SEQUENCE = 0xFFFFFFFE  # non-final, so nLockTime (and CLTV) are enforced
# DER signature plus the sighash byte; fee estimates assume this worst case.
MAX_WITNESS_SIGNATURE_SIZE = MAX_DER_SIGNATURE_SIZE + 1
CLOSE_BRANCH = b"\x01"  # the minimal OP_IF "true" (MINIMALIF policy)
REFUND_BRANCH = b""  # the minimal OP_IF "false"
DEFAULT_CLOSE_MARGIN = 12  # blocks before expiry by which the payee must close
CHANNEL_ID_TAG = b"mu:channel-id:v1"
PAYMENT_SIZE_MAX = 32 + 8 + 1 + MAX_WITNESS_SIGNATURE_SIZE
_PAYMENT_HEADER = struct.Struct("<32sQB")
_I64_PACK = struct.Struct("<q").pack
# funding txid, vout, capacity, payer, payee, expiry, fee rate, dust limit (§7.2).
_PARAMS_LAYOUT = struct.Struct("<32sIq33s33sIIq")
CHANNEL_PARAMS_SIZE = _PARAMS_LAYOUT.size
_DIGEST_SUFFIX = u32(COMMITMENT_LOCKTIME) + u32(SIGHASH_ALL)


def funding_script_for(payer: PublicKey, payee: PublicKey, expiry_height: int) -> bytes:
    """The P2WSH scriptPubKey to fund, before the funding outpoint is known."""
    return p2wsh_script(channel_script(payee, payer, expiry_height))


def _estimate_vsize(outputs: tuple[TxOut, ...], witness: tuple[bytes, ...], locktime: int, sequence: int) -> int:
    txin = TxIn(OutPoint(bytes(32), 0), b"", sequence, witness)
    return Transaction(CHANNEL_TX_VERSION, (txin,), outputs, locktime).vsize()


@dataclass(frozen=True, slots=True)
class ChannelParams:
    """The terms both sides agree on at open; every transaction derives from them.

    Attributes:
        funding_outpoint: the P2WSH output holding ``capacity``.
        capacity: satoshis in the funding output.
        payer, payee: compressed public keys of the two parties.
        expiry_height: block height after which the payer may refund.
        fee_rate: sat/vB for commitments, fixed for the channel's life.
        dust_limit: outputs below this are left out of commitments.
    """

    funding_outpoint: OutPoint
    capacity: int
    payer: PublicKey
    payee: PublicKey
    expiry_height: int
    fee_rate: int
    dust_limit: int = P2WPKH_DUST
    witness_script: bytes = field(init=False, repr=False, compare=False)
    channel_id: bytes = field(init=False, repr=False, compare=False)
    commitment_fee: int = field(init=False, repr=False, compare=False)
    payee_script: bytes = field(init=False, repr=False, compare=False)
    payer_script: bytes = field(init=False, repr=False, compare=False)
    _digest_prefix: bytes = field(init=False, repr=False, compare=False)
    _payee_output_script: bytes = field(init=False, repr=False, compare=False)
    _payer_output_script: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.funding_outpoint, OutPoint):
            raise ChannelParamsError("funding_outpoint must be an OutPoint")
        if not isinstance(self.payer, PublicKey) or not isinstance(self.payee, PublicKey):
            raise ChannelParamsError("payer and payee must be PublicKey values")
        for name in ("capacity", "expiry_height", "fee_rate", "dust_limit"):
            if type(getattr(self, name)) is not int:
                raise ChannelParamsError(f"{name} must be an int")
        if not 0 < self.capacity <= MAX_MONEY:
            raise ChannelParamsError("capacity outside (0, MAX_MONEY]")
        if self.payer == self.payee:
            raise ChannelParamsError("payer and payee keys must differ")
        if not MIN_FEE_RATE <= self.fee_rate <= MAX_FEE_RATE:
            raise ChannelParamsError(f"fee rate must be {MIN_FEE_RATE}..{MAX_FEE_RATE} sat/vB")
        if self.dust_limit < P2WPKH_DUST:
            raise ChannelParamsError(f"dust limit below Bitcoin Core's P2WPKH dust ({P2WPKH_DUST} sat)")
        try:
            script = channel_script(self.payee, self.payer, self.expiry_height)
        except ValueError as exc:
            raise ChannelParamsError(str(exc)) from exc
        payee_script = p2wpkh_script(self.payee.hash160())
        payer_script = p2wpkh_script(self.payer.hash160())
        # §5.2: the fee is the rate times the largest commitment (two outputs,
        # 73-byte signatures), so it never depends on the total.
        worst = (bytes(MAX_WITNESS_SIGNATURE_SIZE), bytes(MAX_WITNESS_SIGNATURE_SIZE), CLOSE_BRANCH, script)
        outs = (TxOut(0, payee_script), TxOut(0, payer_script))
        fee = self.fee_rate * _estimate_vsize(outs, worst, COMMITMENT_LOCKTIME, COMMITMENT_SEQUENCE)
        if self.capacity - fee < 2 * self.dust_limit:
            raise ChannelParamsError(f"capacity {self.capacity} too small for fee {fee} and two dust limits")
        ident = CHANNEL_ID_TAG + self.serialize()
        # BIP 143 preimage up to hashOutputs: fixed for the channel (§5.3).
        outpoint = self.funding_outpoint.serialize()
        prefix = b"".join(
            (
                u32(CHANNEL_TX_VERSION),
                hash256(outpoint),
                hash256(u32(COMMITMENT_SEQUENCE)),
                outpoint,
                var_bytes(script),
                i64(self.capacity),
                u32(COMMITMENT_SEQUENCE),
            )
        )
        for name, value in (
            ("witness_script", script),
            ("channel_id", sha256(ident)),
            ("commitment_fee", fee),
            ("payee_script", payee_script),
            ("payer_script", payer_script),
            ("_digest_prefix", prefix),
            ("_payee_output_script", var_bytes(payee_script)),
            ("_payer_output_script", var_bytes(payer_script)),
        ):
            object.__setattr__(self, name, value)

    def serialize(self) -> bytes:
        """§7.2 fixed layout (126 bytes); also the channel id preimage after its tag."""
        return _PARAMS_LAYOUT.pack(
            self.funding_outpoint.txid,
            self.funding_outpoint.index,
            self.capacity,
            self.payer.data,
            self.payee.data,
            self.expiry_height,
            self.fee_rate,
            self.dust_limit,
        )

    @classmethod
    def parse(cls, data: bytes) -> ChannelParams:
        """Decode :meth:`serialize` output, validating every field.

        Raises:
            ChannelParamsError: wrong length or unusable terms.
        """
        if len(data) != _PARAMS_LAYOUT.size:
            raise ChannelParamsError(f"channel params must be {_PARAMS_LAYOUT.size} bytes, got {len(data)}")
        txid, index, capacity, payer, payee, expiry, fee_rate, dust = _PARAMS_LAYOUT.unpack(data)
        try:
            keys = PublicKey(payer), PublicKey(payee)
        except ValueError as exc:
            raise ChannelParamsError(f"bad channel key: {exc}") from exc
        return cls(OutPoint(txid, index), capacity, keys[0], keys[1], expiry, fee_rate, dust)

    @property
    def max_total(self) -> int:
        """The largest cumulative total a payment may carry: capacity minus fee."""
        return self.capacity - self.commitment_fee

    def funding_output(self) -> TxOut:
        return TxOut(self.capacity, funding_script(self))


def funding_script(params: ChannelParams) -> bytes:
    """P2WSH scriptPubKey of the channel's funding output (§4.2)."""
    return p2wsh_script(params.witness_script)


def commitment_outputs(params: ChannelParams, total: int) -> tuple[TxOut, ...]:
    """Outputs of the commitment for ``total`` (§5.1): payee first, then payer change.

    An output below ``params.dust_limit`` is left out and its value goes to
    the miners, so a tiny total or a tiny change never makes a non-standard
    transaction.
    """
    if not 0 <= total <= params.max_total:
        raise BeyondCapacityError(f"total {total} outside [0, {params.max_total}]")
    change = params.max_total - total
    outs = []
    if total >= params.dust_limit:
        outs.append(TxOut(total, params.payee_script))
    if change >= params.dust_limit:
        outs.append(TxOut(change, params.payer_script))
    return tuple(outs)


def commitment_transaction(params: ChannelParams, total: int) -> Transaction:
    """The unsigned commitment transaction for ``total`` (§5.1)."""
    txin = TxIn(params.funding_outpoint, b"", COMMITMENT_SEQUENCE)
    return Transaction(CHANNEL_TX_VERSION, (txin,), commitment_outputs(params, total), COMMITMENT_LOCKTIME)


def commitment_digest(params: ChannelParams, total: int) -> bytes:
    """BIP 143 SIGHASH_ALL digest of the commitment for ``total``.

    Equal to ``segwit_v0_sighash(commitment_transaction(...), 0, script,
    capacity)`` (a test checks it) but hashes only the outputs per call:
    this is the payee's per-payment path.
    """
    max_total = params.max_total
    if not 0 <= total <= max_total:
        raise BeyondCapacityError(f"total {total} outside [0, {max_total}]")
    change = max_total - total
    dust = params.dust_limit
    outputs = b""
    if total >= dust:
        outputs = _I64_PACK(total) + params._payee_output_script
    if change >= dust:
        outputs += _I64_PACK(change) + params._payer_output_script
    return hash256(params._digest_prefix + hash256(outputs) + _DIGEST_SUFFIX)


@dataclass(frozen=True, slots=True)
class SignedCommitment:
    """A cumulative total and the payer's signature (DER + SIGHASH_ALL byte) on its commitment."""

    channel_id: bytes
    total: int
    signature: bytes

    def __post_init__(self) -> None:
        # Validate at construction (h11-style events) so a peer's msgpack
        # fields of the wrong type or size never reach the state machine.
        if not isinstance(self.channel_id, bytes) or len(self.channel_id) != 32:
            raise MalformedPaymentError("channel id must be 32 bytes")
        if type(self.total) is not int or not 0 <= self.total < 2**64:
            raise MalformedPaymentError("total must be an int in [0, 2**64)")
        if not isinstance(self.signature, bytes) or not 0 < len(self.signature) <= MAX_WITNESS_SIGNATURE_SIZE:
            raise MalformedPaymentError(f"signature must be 1..{MAX_WITNESS_SIGNATURE_SIZE} bytes")

    def serialize(self) -> bytes:
        """§7 wire form: channel_id(32) | total u64 LE | sig_len u8 | signature."""
        return _PAYMENT_HEADER.pack(self.channel_id, self.total, len(self.signature)) + self.signature

    @classmethod
    def parse(cls, data: bytes) -> SignedCommitment:
        if not _PAYMENT_HEADER.size < len(data) <= PAYMENT_SIZE_MAX:
            raise MalformedPaymentError(f"payment of {len(data)} bytes outside ({_PAYMENT_HEADER.size}, {PAYMENT_SIZE_MAX}]")
        channel_id, total, sig_len = _PAYMENT_HEADER.unpack_from(data)
        if _PAYMENT_HEADER.size + sig_len != len(data):
            raise MalformedPaymentError("signature length does not match the payment size")
        return cls(channel_id, total, data[_PAYMENT_HEADER.size :])


class PayerChannel:
    """The paying side: turns "pay N more sats" into a signed :class:`SignedCommitment`."""

    def __init__(self, params: ChannelParams, key: PrivateKey, total: int = 0) -> None:
        if key.public_key != params.payer:
            raise ChannelParamsError("key is not the channel's payer key")
        if not 0 <= total <= params.max_total:
            raise ChannelParamsError("restored total outside the channel")
        self.params = params
        self._key = key
        self.total = total

    @property
    def remaining(self) -> int:
        """Satoshis still payable through this channel."""
        return self.params.max_total - self.total

    def pay(self, amount: int) -> SignedCommitment:
        """Sign a commitment for ``total + amount`` and make it the new total.

        Raises:
            InvalidAmountError: ``amount`` is not a positive int.
            ChannelExhaustedError: the new total would pass capacity minus fee.
        """
        if type(amount) is not int or amount <= 0:
            raise InvalidAmountError(f"payment amount must be a positive int, got {amount!r}")
        new_total = self.total + amount
        if new_total > self.params.max_total:
            raise ChannelExhaustedError(f"paying {amount} needs {new_total} > {self.params.max_total} available")
        payment = self.sign(new_total)
        self.total = payment.total
        return payment

    def sign(self, total: int) -> SignedCommitment:
        """Sign the commitment for ``total`` without making it the channel's total.

        A payer may sign its next payment ahead (while the current request is
        in flight) and hand it over later with :meth:`adopt`; nothing is paid
        until a payment leaves.

        Raises:
            InvalidAmountError: ``total`` is not above the current total.
            ChannelExhaustedError: ``total`` passes capacity minus fee.
        """
        if type(total) is not int or total <= self.total:
            raise InvalidAmountError(f"total must be an int above {self.total}, got {total!r}")
        if total > self.params.max_total:
            raise ChannelExhaustedError(f"total {total} > {self.params.max_total} available")
        signature = self._key.sign(commitment_digest(self.params, total)) + bytes((SIGHASH_ALL,))
        return SignedCommitment(self.params.channel_id, total, signature)

    def signed_by_us(self, total: int, signature: bytes) -> bool:
        """Whether ``signature`` (DER + sighash byte) is our signature of this channel's commitment for ``total``.

        A host reporting a total above ours must show it (specs/payments.md
        §After a crash): its word alone would raise the total we sign on.
        """
        if not 0 < total <= self.params.max_total or len(signature) < 2 or signature[-1] != SIGHASH_ALL:
            return False
        return self.params.payer.verify(commitment_digest(self.params, total), signature[:-1])

    def adopt(self, payment: SignedCommitment) -> SignedCommitment:
        """Make a payment from :meth:`sign` the new total (it must still be above it).

        Raises:
            WrongChannelError: the payment is for another channel.
            InvalidAmountError: the total is no longer above the current one.
        """
        if payment.channel_id != self.params.channel_id:
            raise WrongChannelError("payment is for another channel")
        if payment.total <= self.total:
            raise InvalidAmountError(f"total {payment.total} is not above {self.total}")
        self.total = payment.total
        return payment


class PayeeChannel:
    """The paid side: checks payments, keeps the best one, builds the closing transaction."""

    def __init__(self, params: ChannelParams, key: PrivateKey, latest: SignedCommitment | None = None) -> None:
        if key.public_key != params.payee:
            raise ChannelParamsError("key is not the channel's payee key")
        self.params = params
        self._key = key
        self.latest: SignedCommitment | None = None
        if latest is not None:
            self.accept(latest, 0)

    @property
    def total(self) -> int:
        """The largest accepted cumulative total (0 before any payment)."""
        return 0 if self.latest is None else self.latest.total

    def accept(self, payment: SignedCommitment, owed: int) -> int:
        """Check ``payment`` and make it the best one; returns the accepted total.

        ``owed`` is what the payee requires this payment to add (0 or more).
        Checks run cheapest first; the signature check is last (§8).

        Raises:
            WrongChannelError, NonIncreasingTotalError, BeyondCapacityError,
            IncrementBelowOwedError, BadSignatureError: see ``specs/payments.md`` §9 Error codes.
        """
        if type(owed) is not int or owed < 0:
            raise InvalidAmountError(f"owed must be a non-negative int, got {owed!r}")
        params = self.params
        if payment.channel_id != params.channel_id:
            raise WrongChannelError("payment is for another channel")
        total = payment.total
        if type(total) is not int or total <= self.total:
            raise NonIncreasingTotalError(f"total {total} does not exceed accepted total {self.total}")
        if total > params.max_total:
            raise BeyondCapacityError(f"total {total} exceeds capacity minus fee {params.max_total}")
        if total - self.total < owed:
            raise IncrementBelowOwedError(f"increment {total - self.total} is below the {owed} owed")
        sig = payment.signature
        if not sig or sig[-1] != SIGHASH_ALL:
            raise BadSignatureError("signature must end with SIGHASH_ALL")
        # PublicKey.verify also refuses non-strict DER and high S (BIP 66, LOW_S).
        if not params.payer.verify(commitment_digest(params, total), sig[:-1]):
            raise BadSignatureError("signature is malformed or does not sign this commitment with the payer key")
        self.latest = payment
        return total

    def close_transaction(self) -> Transaction:
        """The best commitment, co-signed: witness ``[payer_sig, payee_sig, 0x01, script]`` (§5.4).

        Raises:
            NothingToCloseError: no payment yet, or the total is below the dust limit.
        """
        latest = self.latest
        if latest is None or latest.total < self.params.dust_limit:
            raise NothingToCloseError("no accepted payment with a payee output")
        tx = commitment_transaction(self.params, latest.total)
        payee_sig = self._key.sign(commitment_digest(self.params, latest.total)) + bytes((SIGHASH_ALL,))
        witness = (latest.signature, payee_sig, CLOSE_BRANCH, self.params.witness_script)
        return tx.with_witnesses([witness])


def refund_vsize(params: ChannelParams, destination_script: bytes) -> int:
    """Worst-case vsize of the refund transaction (73-byte signature)."""
    witness = (bytes(MAX_WITNESS_SIGNATURE_SIZE), REFUND_BRANCH, params.witness_script)
    return _estimate_vsize((TxOut(0, destination_script),), witness, params.expiry_height, REFUND_SEQUENCE)


def refund_transaction(params: ChannelParams, payer_key: PrivateKey, destination_script: bytes, fee: int) -> Transaction:
    """The payer's refund after expiry (§5.5): everything but ``fee`` to ``destination_script``.

    nLockTime = expiry height and nSequence 0xfffffffe, so the
    OP_CHECKLOCKTIMEVERIFY branch passes and the transaction can be mined
    from block ``expiry_height + 1``.  Witness ``[payer_sig, <empty>, script]``.

    Raises:
        RefundFeeError: fee below the minimum relay fee, or output left as dust.
    """
    if payer_key.public_key != params.payer:
        raise ChannelParamsError("key is not the channel's payer key")
    if type(fee) is not int or fee <= 0:
        raise InvalidAmountError("refund fee must be a positive int")
    floor = min_relay_fee(refund_vsize(params, destination_script))
    if fee < floor:
        raise RefundFeeError(f"refund fee {fee} below the minimum relay fee {floor}")
    value = params.capacity - fee
    if value < dust_threshold(destination_script):
        raise RefundFeeError(f"refund output of {value} sat would be dust")
    txin = TxIn(params.funding_outpoint, b"", REFUND_SEQUENCE)
    tx = Transaction(CHANNEL_TX_VERSION, (txin,), (TxOut(value, destination_script),), params.expiry_height)
    digest = segwit_v0_sighash(tx, 0, params.witness_script, params.capacity, SIGHASH_ALL)
    sig = payer_key.sign(digest) + bytes((SIGHASH_ALL,))
    return tx.with_witnesses([(sig, REFUND_BRANCH, params.witness_script)])


def close_deadline(expiry_height: int, margin: int = DEFAULT_CLOSE_MARGIN) -> int:
    """The last height at which the payee should broadcast its close (§8.3): expiry - margin."""
    if type(margin) is not int or margin < 0:
        raise ValueError("margin must be a non-negative int of blocks")
    if margin >= expiry_height:
        raise ValueError("margin must be smaller than the expiry height")
    return expiry_height - margin
