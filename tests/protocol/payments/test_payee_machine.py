"""The payee's pure decisions (protocol/payments/payee.py): no sockets, no trio.

Every refusal code is reached, and where two apply the one specs/payments.md
(§Payment field of GET and PUT, §Channel messages) checks first wins.  A
small in-test host adopts each decision the way ``PayeeBook`` does once the
record is on disk, so sequences of requests can be pushed through it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bitcoin import OutPoint, PrivateKey
from protocol.bitcoin.channel import ChannelParams, PayeeChannel, PayerChannel, close_deadline, funding_script_for
from protocol.payments import MIB, REDELIVERY_DEPTH, Kind, PaymentErrorCode, PeerAccount, Terms
from protocol.payments.messages import ChannelId, OpenChannel, Payment
from protocol.payments.payee import (
    AcceptChannel,
    AcceptPayment,
    ChargeCovered,
    ChargeDecision,
    ChargeRequest,
    LookUpChannel,
    MissingChannel,
    PayeeEntry,
    Redeliver,
    Refuse,
    decide_charge,
    decide_open,
)
from protocol.payments.vocabulary import ChannelStatus

PAYEE_KEY = PrivateKey.from_seed(b"payee")
PAYER_KEY = PrivateKey.from_seed(b"payer")
ALLOWANCE = 250
PRICE = 100  # a GET of one MiB at 100 sats per MiB
TERMS = Terms(price_per_mib_get=100, price_per_mib_put=300, retention_seconds=86_400, free_allowance=ALLOWANCE,
              min_capacity=20_000, expiry_window=144, min_confirmations=1, fee_rate=2,
              payment_pubkey=PAYEE_KEY.public_key.data, identity_key=bytes(32))
CID = ChannelId(bytes(range(32)), 1)
OTHER_CID = ChannelId(bytes(range(1, 33)), 0)
EXPIRY = 1_000
TIP = 500
PARAMS = ChannelParams(funding_outpoint=OutPoint(CID.txid, CID.vout), capacity=100_000, payer=PAYER_KEY.public_key,
                       payee=PAYEE_KEY.public_key, expiry_height=EXPIRY, fee_rate=2)
SIGNER = PayerChannel(PARAMS, PAYER_KEY)


def chunk(n: int) -> bytes:
    return n.to_bytes(32, "big")


def paying(total: int, *, sig: bytes | None = None, channel: ChannelId = CID) -> dict[str, Any]:
    """The ``payment`` map for ``total``, signed by the payer unless ``sig`` is given."""
    return Payment(channel=channel, total=total, sig=SIGNER.sign(total).signature if sig is None else sig).to_wire()


def get(n: int, payment: object | None = None, size: int = MIB) -> ChargeRequest:
    return ChargeRequest(kind=Kind.GET, chunk=chunk(n), size=size, payment=payment)


def fresh_entry(status: ChannelStatus = ChannelStatus.OPEN) -> PayeeEntry:
    return PayeeEntry(channel=PayeeChannel(PARAMS, PAYEE_KEY), peer="aa", status=status,
                      deadline=close_deadline(EXPIRY))


@dataclass
class Host:
    """Adopts each decision as ``PayeeBook`` does once its record is on disk."""

    entry: PayeeEntry | None = field(default_factory=fresh_entry)
    account: PeerAccount = PeerAccount()
    tip: int = TIP
    accepted: list[int] = field(default_factory=list)  # totals accepted, in order

    def decide(self, request: ChargeRequest) -> ChargeDecision:
        decision = decide_charge(request, terms=TERMS, account=self.account)
        if isinstance(decision, LookUpChannel):
            facts = self.entry if self.entry is not None and decision.channel == CID else MissingChannel()
            request = dataclasses.replace(request, payment=decision.payment)  # as PayeeBook asks again: parsed
            decision = decide_charge(request, terms=TERMS, account=self.account, channel=facts, tip_height=self.tip)
        assert not isinstance(decision, LookUpChannel)
        return decision

    def send(self, request: ChargeRequest) -> ChargeDecision:
        decision = self.decide(request)
        if isinstance(decision, (ChargeCovered, AcceptPayment)):
            self.account = decision.account
        if isinstance(decision, AcceptPayment):
            assert self.entry is not None
            self.entry = dataclasses.replace(self.entry, channel=decision.channel)
            self.accepted.append(decision.payment.total)
        return decision

    def total(self) -> int:
        assert self.entry is not None
        return self.entry.channel.total


def least_paid_get(host: Host, n: int) -> ChargeRequest:
    """A one-MiB GET carrying the least it owes (no payment when nothing)."""
    owed = host.account.owed(PRICE, ALLOWANCE)
    return get(n, paying(host.total() + owed) if owed else None)


def refused(decision: ChargeDecision, code: PaymentErrorCode) -> Refuse:
    assert isinstance(decision, Refuse), decision
    assert decision.code == code, decision
    return decision


def host_past_allowance() -> Host:
    """A host whose peer used 200 of its 250 free sats: the next GET owes 50."""
    host = Host()
    for n in range(2):
        assert isinstance(host.send(get(n)), ChargeCovered)
    return host


# -- serving without payment ---------------------------------------------------------


def test_free_allowance_then_insufficient_payment_with_owed() -> None:
    host = host_past_allowance()
    refusal = refused(host.send(get(2)), PaymentErrorCode.INSUFFICIENT_PAYMENT)
    assert refusal.owed == 50 and refusal.error().owed == 50
    assert host.account == PeerAccount(consumed=200, paid=0, last_chunk=chunk(1), last_kind=Kind.GET,
                                       recent=((chunk(0), Kind.GET), (chunk(1), Kind.GET)))


def test_a_payment_map_is_not_parsed_before_it_is_needed() -> None:
    host = host_past_allowance()
    assert isinstance(host.send(get(0, payment={"junk": 1})), Redeliver)


def test_redelivery_depth_and_kind() -> None:
    host = Host()
    for n in range(REDELIVERY_DEPTH):
        assert not isinstance(host.send(least_paid_get(host, n)), Refuse)
    assert isinstance(host.decide(get(0)), Redeliver)  # the oldest of the last REDELIVERY_DEPTH
    assert not isinstance(host.decide(ChargeRequest(kind=Kind.PUT, chunk=chunk(0), size=MIB)), Redeliver)
    assert not isinstance(host.send(least_paid_get(host, REDELIVERY_DEPTH)), Refuse)
    refused(host.decide(get(0)), PaymentErrorCode.INSUFFICIENT_PAYMENT)  # out of the window: charged again


# -- the payment -----------------------------------------------------------------------


def test_accepting_a_payment_changes_no_input() -> None:
    host = host_past_allowance()
    entry, account = host.entry, host.account
    decision = host.decide(get(2, paying(80)))
    assert isinstance(decision, AcceptPayment)
    assert (decision.increment, decision.price, decision.channel.total) == (80, PRICE, 80)
    assert decision.account.paid == 80 and decision.account.consumed == 300  # 30 sats of credit
    assert entry is not None and entry.channel.total == 0 and host.account is account  # adopted only once on disk


def test_credit_serves_the_next_request_without_payment() -> None:
    host = host_past_allowance()
    assert isinstance(host.send(get(2, paying(150))), AcceptPayment)  # owed 50, 100 credit
    assert isinstance(host.send(get(3)), ChargeCovered)
    refused(host.send(get(4)), PaymentErrorCode.INSUFFICIENT_PAYMENT)


def test_lookup_is_asked_for_the_named_channel() -> None:
    decision = decide_charge(get(2, paying(50, channel=OTHER_CID)), terms=TERMS, account=PeerAccount())
    assert decision == LookUpChannel(channel=OTHER_CID, payment=Payment.from_wire(paying(50, channel=OTHER_CID)))
    with pytest.raises(ValueError):
        decide_charge(get(2, paying(50)), terms=TERMS, account=PeerAccount(), channel=fresh_entry())


def test_a_payment_parsed_at_lookup_decides_as_its_map() -> None:
    request = get(8, paying(800))
    host = host_past_allowance()
    lookup = decide_charge(request, terms=TERMS, account=host.account)
    assert isinstance(lookup, LookUpChannel)
    facts = dict(terms=TERMS, account=host.account, channel=host.entry, tip_height=TIP)
    parsed = decide_charge(dataclasses.replace(request, payment=lookup.payment), **facts)  # type: ignore[arg-type]
    from_map = decide_charge(request, **facts)  # type: ignore[arg-type]
    assert isinstance(parsed, AcceptPayment) and isinstance(from_map, AcceptPayment)
    assert dataclasses.replace(parsed, channel=from_map.channel) == from_map  # the channel is a new object each time
    assert parsed.channel.total == from_map.channel.total == 800


def test_covered_late_payment_is_served_and_a_stale_owed_one_refused() -> None:
    # A paid window: the newer payment (total 250) overtook older ones (50, then 250 again).
    host = host_past_allowance()
    assert isinstance(host.send(get(2, paying(250))), AcceptPayment)  # owed 50, 200 credit
    assert isinstance(host.send(get(3, paying(50))), ChargeCovered)  # owed 0: carries nothing, ignored
    assert isinstance(host.send(get(4, paying(250))), ChargeCovered)  # the same total, owed 0: ignored too
    assert host.total() == 250 and host.account.paid == 250 and host.account.consumed == 500
    refused(host.send(get(5, paying(50))), PaymentErrorCode.PAYMENT_TOTAL_LOWER)  # owed 100 now
    refused(host.send(get(5, paying(250))), PaymentErrorCode.PAYMENT_REPLAY)


BAD_SIG = bytes(70) + b"\x01"


@pytest.mark.parametrize(("situation", "code"), [
    # Each case also breaks every later check, so only the first may answer.
    ("malformed", PaymentErrorCode.BAD_PAYMENT),
    ("unknown", PaymentErrorCode.UNKNOWN_CHANNEL),
    ("closing", PaymentErrorCode.CHANNEL_EXPIRED),
    ("deadline", PaymentErrorCode.CHANNEL_EXPIRED),
    ("replay", PaymentErrorCode.PAYMENT_REPLAY),
    ("lower", PaymentErrorCode.PAYMENT_TOTAL_LOWER),
    ("over_capacity", PaymentErrorCode.TOTAL_OVER_CAPACITY),
    ("below_owed", PaymentErrorCode.INSUFFICIENT_PAYMENT),
    ("bad_signature", PaymentErrorCode.BAD_SIGNATURE),
])
def test_refusal_codes_in_their_order(situation: str, code: PaymentErrorCode) -> None:
    host = host_past_allowance()
    assert isinstance(host.send(get(2, paying(50))), AcceptPayment)  # owed 100 from now on, total 50
    payment: object = paying(40, sig=BAD_SIG)  # lower, and badly signed
    if situation == "malformed":
        payment = {"channel": CID.to_bytes(), "total": 40}
        host.entry = None
    elif situation == "unknown":
        payment = paying(40, sig=BAD_SIG, channel=OTHER_CID)
        host.tip = EXPIRY
    elif situation == "closing":
        assert host.entry is not None
        host.entry = dataclasses.replace(host.entry, status=ChannelStatus.CLOSING)
    elif situation == "deadline":
        host.tip = close_deadline(EXPIRY)
    elif situation == "replay":
        payment = paying(50, sig=BAD_SIG)
    elif situation == "over_capacity":
        payment = paying(PARAMS.max_total + 1, sig=BAD_SIG)
    elif situation == "below_owed":
        payment = paying(149, sig=BAD_SIG)
    elif situation == "bad_signature":
        payment = paying(150, sig=SIGNER.sign(151).signature)
    elif situation != "lower":
        raise AssertionError(situation)
    refusal = refused(host.send(get(3, payment)), code)
    assert refusal.owed == (100 if code == PaymentErrorCode.INSUFFICIENT_PAYMENT else None)
    assert host.account.consumed == 300 and host.account.paid == 50  # nothing charged


def test_deadline_is_the_first_refused_height() -> None:
    host = host_past_allowance()
    host.tip = close_deadline(EXPIRY) - 1
    assert isinstance(host.send(get(2, paying(50))), AcceptPayment)


def test_a_signature_of_another_channel_does_not_verify() -> None:
    other = dataclasses.replace(PARAMS, funding_outpoint=OutPoint(OTHER_CID.txid, OTHER_CID.vout))
    sig = PayerChannel(other, PAYER_KEY).sign(50).signature
    refused(host_past_allowance().send(get(2, paying(50, sig=sig))), PaymentErrorCode.BAD_SIGNATURE)


def test_charge_request_validates() -> None:
    with pytest.raises(ValueError):
        ChargeRequest(kind="delete", chunk=chunk(0), size=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        get(0, size=-1)
    assert ChargeRequest(kind="put", chunk=chunk(0), size=1).kind is Kind.PUT  # type: ignore[arg-type]


# -- sequences -------------------------------------------------------------------------


def test_arrival_order_charging_matches_the_spec_formula() -> None:
    """Requests each paying the least they owe, charged in the order sent (§Paid window)."""
    host = Host()
    sizes = [MIB, MIB // 3, 2 * MIB, 1, MIB, MIB // 2, 3 * MIB]
    increments = []
    for n, size in enumerate(sizes):
        owed = host.account.owed(TERMS.get_price(size), ALLOWANCE)
        assert owed <= TERMS.get_price(size)  # a payer never has more than one price outstanding
        decision = host.send(get(n, paying(host.total() + owed) if owed else None, size=size))
        assert isinstance(decision, (AcceptPayment, ChargeCovered))
        increments.append(decision.increment if isinstance(decision, AcceptPayment) else 0)
    consumed = sum(TERMS.get_price(size) for size in sizes)
    assert host.account.consumed == consumed
    assert host.account.paid == sum(increments) == max(0, consumed - ALLOWANCE) == host.total()


# -- properties ------------------------------------------------------------------------

PAYMENT_CHOICES = ("none", "owed", "owed_minus_one", "credit", "stale", "replay", "bad_sig")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from([1, MIB // 2, MIB, 3 * MIB]),
                          st.sampled_from(PAYMENT_CHOICES)), max_size=14))
def test_exposure_and_increasing_totals(steps: list[tuple[int, int, str]]) -> None:
    host = Host()
    for n, size, choice in steps:
        price = TERMS.get_price(size)
        owed = host.account.owed(price, ALLOWANCE)
        total = host.total()
        payment = {
            "none": None, "owed": paying(total + owed) if owed else None,
            "owed_minus_one": paying(total + owed - 1) if owed > 1 else None,
            "credit": paying(total + owed + 37), "stale": paying(total) if total else None,
            "replay": paying(max(total - 1, 1)), "bad_sig": paying(total + owed + 1, sig=BAD_SIG),
        }[choice]
        before = host.account
        decision = host.send(get(n, payment, size=size))
        if isinstance(decision, Refuse):
            assert host.account == before
        # Served but unpaid never exceeds the free allowance (specs/payments.md §Accounting).
        assert host.account.consumed - host.account.paid <= ALLOWANCE
        assert host.account.paid == host.total()
    assert host.accepted == sorted(set(host.accepted))  # accepted totals strictly increase


# -- opening a channel -----------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    value: int
    script_pubkey: bytes
    confirmations: int


GOOD_SCRIPT = funding_script_for(PAYER_KEY.public_key, PAYEE_KEY.public_key, EXPIRY)


def open_request(capacity: int = 100_000, payer: bytes = PAYER_KEY.public_key.data) -> OpenChannel:
    return OpenChannel(channel=CID, capacity=capacity, expiry=EXPIRY, payer_pubkey=payer)


def opening(request: OpenChannel | None = None, *, exists: bool = False, output: Output | None = None,
            tip: int = TIP, terms: Terms = TERMS) -> AcceptChannel | Refuse:
    request = request or open_request()
    if output is None:
        output = Output(request.capacity, GOOD_SCRIPT, 1)
    return decide_open(request, terms=terms, payee=PAYEE_KEY.public_key, exists=exists, funding=output, tip_height=tip)


def test_open_accepts_a_good_channel() -> None:
    decision = opening()
    assert decision == AcceptChannel(params=PARAMS, deadline=close_deadline(EXPIRY))


def test_open_refusals_in_their_order() -> None:
    unconfirmed_mismatch = Output(5, b"\x00\x20" + bytes(32), 0)
    code = PaymentErrorCode
    assert refused_open(opening(exists=True, output=unconfirmed_mismatch, tip=EXPIRY)) == code.CHANNEL_EXISTS
    missing = decide_open(open_request(), terms=TERMS, payee=PAYEE_KEY.public_key, exists=False, funding=None,
                          tip_height=EXPIRY)
    assert refused_open(missing) == code.FUNDING_SPENT
    assert refused_open(opening(output=unconfirmed_mismatch, tip=EXPIRY)) == code.FUNDING_MISMATCH
    assert refused_open(opening(output=Output(99_999, GOOD_SCRIPT, 0))) == code.FUNDING_MISMATCH
    bad_key = open_request(payer=b"\x02" + bytes(32))  # not on the curve
    assert refused_open(opening(bad_key, output=Output(100_000, GOOD_SCRIPT, 1))) == code.FUNDING_MISMATCH
    small = open_request(capacity=10_000)
    assert refused_open(opening(small, output=Output(10_000, GOOD_SCRIPT, 0), tip=EXPIRY)) == code.CAPACITY_TOO_SMALL
    # At or above the minimum but too small for the fee and two dust outputs (Part 1 §7.2).
    tiny_terms = dataclasses.replace(TERMS, min_capacity=1)
    tiny = open_request(capacity=500)
    assert refused_open(opening(tiny, output=Output(500, GOOD_SCRIPT, 0), terms=tiny_terms)) == code.CAPACITY_TOO_SMALL
    assert refused_open(opening(output=Output(100_000, GOOD_SCRIPT, 0), tip=EXPIRY)) == code.FUNDING_UNCONFIRMED
    assert refused_open(opening(tip=EXPIRY - TERMS.expiry_window + 1)) == code.EXPIRY_TOO_SOON
    assert isinstance(opening(tip=EXPIRY - TERMS.expiry_window), AcceptChannel)


def refused_open(decision: AcceptChannel | Refuse) -> PaymentErrorCode:
    assert isinstance(decision, Refuse), decision
    return decision.code
