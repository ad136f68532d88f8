"""Channel state machine: payments, refusals, commitments, closes and refunds, checked by pbk."""

from __future__ import annotations

import pytest

from protocol.bitcoin import (
    P2WPKH_DUST,
    BadSignatureError,
    ChannelParams,
    BeyondCapacityError,
    ChannelExhaustedError,
    ChannelParamsError,
    IncrementBelowOwedError,
    InvalidAmountError,
    MalformedPaymentError,
    NonIncreasingTotalError,
    NothingToCloseError,
    PayeeChannel,
    PayerChannel,
    SignedCommitment,
    RefundFeeError,
    Transaction,
    WrongChannelError,
    close_deadline,
    commitment_digest,
    commitment_transaction,
    funding_script_for,
    p2wpkh_for,
    refund_transaction,
    segwit_v0_sighash,
)
from protocol.bitcoin.channel import REFUND_SEQUENCE
from tests.helpers.kernel import assert_invalid, assert_valid, policy_problems, verify_input
from tests.protocol.bitcoin.channel_fixtures import (
    EXPIRY,
    FUNDING,
    OTHER_KEY,
    PAYEE_KEY,
    PAYER_KEY,
    make_params,
    spent,
)


def pair(**kw: int) -> tuple[PayerChannel, PayeeChannel]:
    params = make_params(**kw)
    return PayerChannel(params, PAYER_KEY), PayeeChannel(params, PAYEE_KEY)


def test_params_derivations() -> None:
    params = make_params()
    # specs/payments.md §5.2: 113 base bytes; witness = marker+flag 2, count 1,
    # two 1+73 signatures, 1+1 branch, 1+len(script); vsize = ceil(weight / 4).
    witness = 2 + 1 + 74 + 74 + 2 + 1 + len(params.witness_script)
    assert len(params.witness_script) == 78  # expiry 1000 is a 2-byte push
    assert params.commitment_fee == 2 * -(-(113 * 4 + witness) // 4) == 2 * 171
    assert params.max_total == params.capacity - params.commitment_fee
    assert funding_script_for(params.payer, params.payee, EXPIRY) == params.funding_output().script_pubkey
    assert params.channel_id != make_params(funding=FUNDING.__class__(FUNDING.txid, 2)).channel_id
    assert params.channel_id == make_params().channel_id


@pytest.mark.parametrize(
    "kwargs",
    [{"capacity": 0}, {"capacity": 900}, {"fee_rate": 0}, {"fee_rate": 100_000}, {"expiry": 0}, {"expiry": 600_000_000}],
)
def test_bad_params_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ChannelParamsError) as info:
        make_params(**kwargs)
    assert info.value.code == "bad-channel-params"


def test_keys_must_match_roles() -> None:
    params = make_params()
    with pytest.raises(ChannelParamsError):
        PayerChannel(params, PAYEE_KEY)
    with pytest.raises(ChannelParamsError):
        PayeeChannel(params, PAYER_KEY)


def test_commitment_digest_matches_generic_bip143() -> None:
    params = make_params()
    for total in (0, 1, P2WPKH_DUST, 5_000, params.max_total - 300, params.max_total):
        tx = commitment_transaction(params, total)
        assert commitment_digest(params, total) == segwit_v0_sighash(tx, 0, params.witness_script, params.capacity)


def test_commitment_outputs_and_dust_rule() -> None:
    params = make_params()
    tiny = commitment_transaction(params, 100)
    assert [o.script_pubkey for o in tiny.outputs] == [params.payer_script]
    both = commitment_transaction(params, 10_000)
    assert [o.value for o in both.outputs] == [10_000, params.max_total - 10_000]
    no_change = commitment_transaction(params, params.max_total - 10)
    assert [o.script_pubkey for o in no_change.outputs] == [params.payee_script]
    assert commitment_transaction(params, 10_000) == both  # deterministic


def test_payments_verify_and_close_with_bitcoin_core() -> None:
    payer, payee = pair()
    for amount in (500, 1_000, 2_500):
        payment = payer.pay(amount)
        assert payee.accept(SignedCommitment.parse(payment.serialize()), owed=amount) == payer.total
    close = payee.close_transaction()
    assert close.inputs[0].witness[2] == b"\x01"
    assert [o.value for o in close.outputs] == [4_000, payee.params.max_total - 4_000]
    assert_valid(close, spent(payee.params))
    # The actual fee rate is at least the agreed one (estimate used 73-byte signatures).
    assert payee.params.commitment_fee >= payee.params.fee_rate * close.vsize()


def test_close_with_change_dropped_verifies() -> None:
    payer, payee = pair()
    payee.accept(payer.pay(payer.params.max_total - 100), 0)
    close = payee.close_transaction()
    assert len(close.outputs) == 1
    assert_valid(close, spent(payee.params))


def test_tampered_closes_fail_in_bitcoin_core() -> None:
    payer, payee = pair()
    payee.accept(payer.pay(5_000), 0)
    close = payee.close_transaction()
    params = payee.params
    funding = spent(params)
    payer_sig, payee_sig, branch, script = close.inputs[0].witness
    # Swapped signatures.
    assert_invalid(close.with_witnesses([(payee_sig, payer_sig, branch, script)]), funding)
    # Amount changed after signing.
    outs = list(close.outputs)
    outs[0] = outs[0].__class__(outs[0].value + 1, outs[0].script_pubkey)
    changed = Transaction(close.version, close.inputs, tuple(outs), close.locktime)
    assert_invalid(changed, funding)
    # Wrong key: a stranger co-signs instead of the payee.
    digest = commitment_digest(params, 5_000)
    stranger = OTHER_KEY.sign(digest) + b"\x01"
    assert_invalid(close.with_witnesses([(payer_sig, stranger, branch, script)]), funding)
    # Wrong spent amount (the signature commits to the capacity).
    assert_invalid(close, [funding[0].__class__(params.capacity + 1, funding[0].script_pubkey)])
    # A non-minimal OP_IF argument is consensus-valid in witness v0 but not standard.
    loose = close.with_witnesses([(payer_sig, payee_sig, b"\x02", script)])
    assert verify_input(loose, 0, funding)
    assert any("OP_IF" in p for p in policy_problems(loose, funding))


def test_refund_verifies_and_its_tampered_forms_fail() -> None:
    params = make_params()
    dest = p2wpkh_for(PAYER_KEY.public_key)
    refund = refund_transaction(params, PAYER_KEY, dest, fee=300)
    assert refund.locktime == EXPIRY and refund.inputs[0].sequence == REFUND_SEQUENCE
    assert refund.inputs[0].witness[1] == b""
    funding = spent(params)
    assert_valid(refund, funding)

    def resigned(locktime: int, sequence: int) -> Transaction:
        txin = refund.inputs[0].__class__(params.funding_outpoint, b"", sequence)
        tx = Transaction(refund.version, (txin,), refund.outputs, locktime)
        sig = PAYER_KEY.sign(segwit_v0_sighash(tx, 0, params.witness_script, params.capacity)) + b"\x01"
        return tx.with_witnesses([(sig, b"", params.witness_script)])

    # nLockTime = expiry: not final in the expiry block, final from the next one.
    assert not refund.is_final(EXPIRY, 0) and refund.is_final(EXPIRY + 1, 0)
    assert_valid(resigned(EXPIRY + 5, REFUND_SEQUENCE), funding)
    assert_invalid(resigned(EXPIRY - 1, REFUND_SEQUENCE), funding)  # locktime below expiry
    assert_invalid(resigned(EXPIRY, 0xFFFFFFFF), funding)  # final sequence disables CLTV
    # The payee cannot take the refund branch.
    sig = PAYEE_KEY.sign(segwit_v0_sighash(refund, 0, params.witness_script, params.capacity)) + b"\x01"
    assert_invalid(refund.with_witnesses([(sig, b"", params.witness_script)]), funding)


def test_refund_fee_rules() -> None:
    params = make_params()
    dest = p2wpkh_for(PAYER_KEY.public_key)
    with pytest.raises(RefundFeeError):
        refund_transaction(params, PAYER_KEY, dest, fee=50)
    with pytest.raises(RefundFeeError):
        refund_transaction(params, PAYER_KEY, dest, fee=params.capacity - 100)
    with pytest.raises(InvalidAmountError):
        refund_transaction(params, PAYER_KEY, dest, fee=0)
    with pytest.raises(ChannelParamsError):
        refund_transaction(params, PAYEE_KEY, dest, fee=300)


def test_payee_refusals_each_have_their_own_error() -> None:
    payer, payee = pair()
    first = payer.pay(1_000)
    assert payee.accept(first, 1_000) == 1_000
    codes = set()

    with pytest.raises(NonIncreasingTotalError) as e1:
        payee.accept(first, 0)  # equal total (replay)
    lower = PayerChannel(payer.params, PAYER_KEY).pay(500)
    with pytest.raises(NonIncreasingTotalError):
        payee.accept(lower, 0)  # lower total, validly signed
    codes.add(e1.value.code)

    other_payer = PayerChannel(make_params(funding=FUNDING.__class__(bytes(32), 0)), PAYER_KEY)
    with pytest.raises(WrongChannelError) as e2:
        payee.accept(other_payer.pay(2_000), 0)
    codes.add(e2.value.code)

    good = payer.pay(1_000)
    forged = SignedCommitment(good.channel_id, good.total, OTHER_KEY.sign(commitment_digest(payer.params, good.total)) + b"\x01")
    with pytest.raises(BadSignatureError) as e3:
        payee.accept(forged, 0)
    codes.add(e3.value.code)
    wrong_total = SignedCommitment(good.channel_id, good.total + 1, good.signature)
    with pytest.raises(BadSignatureError):
        payee.accept(wrong_total, 0)
    with pytest.raises(BadSignatureError):
        payee.accept(SignedCommitment(good.channel_id, good.total, good.signature[:-1] + b"\x02"), 0)

    beyond = SignedCommitment(good.channel_id, payer.params.max_total + 1, good.signature)
    with pytest.raises(BeyondCapacityError) as e4:
        payee.accept(beyond, 0)
    codes.add(e4.value.code)

    with pytest.raises(IncrementBelowOwedError) as e5:
        payee.accept(good, 1_001)
    codes.add(e5.value.code)

    assert len(codes) == 5
    assert payee.total == 1_000  # nothing refused changed the state
    assert payee.accept(good, 1_000) == 2_000


def test_payer_limits() -> None:
    payer, _ = pair()
    with pytest.raises(InvalidAmountError):
        payer.pay(0)
    with pytest.raises(InvalidAmountError):
        payer.pay(1.5)  # type: ignore[arg-type]
    payer.pay(payer.remaining)
    with pytest.raises(ChannelExhaustedError) as info:
        payer.pay(1)
    assert info.value.code == "channel-exhausted"


def test_sign_ahead_then_adopt() -> None:
    payer, payee = pair()
    first = payer.pay(1_000)
    ahead = payer.sign(2_000)
    assert payer.total == 1_000  # signing ahead pays nothing
    # RFC 6979 signatures: the payment signed ahead is the one pay() would make.
    twin = PayerChannel(payer.params, PAYER_KEY, 1_000).pay(1_000)
    assert ahead == twin
    assert payer.adopt(ahead) == ahead and payer.total == 2_000
    assert payee.accept(first, 0) == 1_000 and payee.accept(ahead, 1_000) == 2_000
    with pytest.raises(InvalidAmountError):
        payer.adopt(ahead)  # no longer above the total
    with pytest.raises(InvalidAmountError):
        payer.sign(2_000)
    with pytest.raises(ChannelExhaustedError):
        payer.sign(payer.params.max_total + 1)
    other = PayerChannel(make_params(funding=FUNDING.__class__(FUNDING.txid, 2)), PAYER_KEY)
    with pytest.raises(WrongChannelError):
        payer.adopt(other.sign(3_000))


def test_nothing_to_close_below_dust() -> None:
    payer, payee = pair()
    with pytest.raises(NothingToCloseError):
        payee.close_transaction()
    payee.accept(payer.pay(P2WPKH_DUST - 1), 0)
    with pytest.raises(NothingToCloseError):
        payee.close_transaction()


def test_payee_restores_from_stored_payment() -> None:
    payer, _ = pair()
    payment = payer.pay(7_000)
    restored = PayeeChannel(payer.params, PAYEE_KEY, latest=payment)
    assert restored.total == 7_000
    with pytest.raises(BadSignatureError):
        PayeeChannel(payer.params, PAYEE_KEY, latest=SignedCommitment(payment.channel_id, 7_001, payment.signature))


def test_payment_wire_form() -> None:
    payer, _ = pair()
    payment = payer.pay(1_234)
    data = payment.serialize()
    assert SignedCommitment.parse(data) == payment
    for bad in (data[:40], data + b"\x00", data[:-1], b""):
        with pytest.raises(MalformedPaymentError):
            SignedCommitment.parse(bad)


def test_close_deadline() -> None:
    assert close_deadline(1_000, 12) == 988
    assert close_deadline(1_000) == 988
    with pytest.raises(ValueError):
        close_deadline(10, 10)
    with pytest.raises(ValueError):
        close_deadline(1_000, -1)


def test_params_wire_form_round_trips_and_validates() -> None:
    params = make_params()
    data = params.serialize()
    assert len(data) == 126
    assert ChannelParams.parse(data) == params
    assert ChannelParams.parse(data).channel_id == params.channel_id
    with pytest.raises(ChannelParamsError):
        ChannelParams.parse(data[:-1])
    bad_key = data[:44] + b"\x05" + data[45:]
    with pytest.raises(ChannelParamsError):
        ChannelParams.parse(bad_key)
    zero_fee = data[:-12] + bytes(4) + data[-8:]
    with pytest.raises(ChannelParamsError):
        ChannelParams.parse(zero_fee)


@pytest.mark.parametrize(
    "fields",
    [(b"short", 1, b"\x30\x01"), (bytes(32), -1, b"\x30"), (bytes(32), 2**64, b"\x30"), (bytes(32), 1, b""),
     (bytes(32), 1, bytes(74)), (bytes(32), "1", b"\x30"), ("x" * 32, 1, b"\x30")],
)
def test_payment_fields_are_validated(fields: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(MalformedPaymentError) as info:
        SignedCommitment(*fields)
    assert info.value.code == "malformed-payment"
