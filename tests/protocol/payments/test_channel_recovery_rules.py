"""The pure rules of channel recovery (specs/payments.md §Channel recovery, §Settlement).

The payer gives up a channel the host refused (``PayerLink.abandon``),
within a budget of opens per host (``ChannelOpenBudget``); the payee takes
no more payments on a channel once its total reached the settle threshold
(``decide_charge``'s ``settle_threshold``).
"""

from __future__ import annotations

import pytest

from protocol.payments import PaymentError, PaymentErrorCode
from protocol.payments.messages import ChannelId
from protocol.payments.payee import AcceptPayment, ChargeRequest, Refuse, decide_charge
from protocol.payments.payer import (
    CHANNEL_OPEN_PERIOD,
    MAX_CHANNEL_OPENS_PER_PERIOD,
    SERVED_CHANNEL_TOTAL,
    Abandoned,
    Admission,
    Answer,
    ChannelOpenBudget,
    Failure,
    PayerLink,
    Phase,
    channel_refused,
)
from protocol.bitcoin.channel import PayerChannel
from tests.protocol.bitcoin.channel_fixtures import PAYER_KEY, make_params
from tests.protocol.payments import test_payee_machine as payee
from tests.protocol.payments.test_payer_machine import CHANNEL, PRICE, get, make_link, state

NEW_CHANNEL = ChannelId(bytes(range(1, 33)), 0)


@pytest.mark.parametrize("code", [PaymentErrorCode.UNKNOWN_CHANNEL, PaymentErrorCode.CHANNEL_EXPIRED,
                                  PaymentErrorCode.FUNDING_SPENT, PaymentErrorCode.TOTAL_OVER_CAPACITY])
def test_refusals_of_the_channel_itself_give_it_up(code: PaymentErrorCode) -> None:
    assert channel_refused(code)


@pytest.mark.parametrize("code", [PaymentErrorCode.INSUFFICIENT_PAYMENT, PaymentErrorCode.PAYMENT_REPLAY,
                                  PaymentErrorCode.PAYMENT_TOTAL_LOWER, PaymentErrorCode.BAD_SIGNATURE,
                                  PaymentErrorCode.BAD_PAYMENT, None])
def test_other_refusals_keep_the_channel(code: PaymentErrorCode | None) -> None:
    assert not channel_refused(code)


def test_a_refused_channel_is_abandoned_at_the_host_total_and_the_next_one_resynchronises() -> None:
    link = make_link(allowance=0)
    first = link.send(get(1))
    link.settle(Answer(charge=first))
    refused = link.send(get(2))  # the host refuses it: CHANNEL_EXPIRED
    assert refused.payment is not None and refused.payment.total == 2 * PRICE
    with pytest.raises(RuntimeError):
        link.abandon()  # still in flight: its answer may say the host recorded it
    link.settle(Failure(charge=refused))
    abandoned = link.abandon()
    # Our payment above the host's last total was refused: it is taken back from what we spent.
    assert (abandoned.channel_id, abandoned.acknowledged) == (CHANNEL, PRICE)
    assert link.channel is None and link.channel_id is None and link.phase is Phase.FAILED
    assert link.admit(PRICE) is Admission.SEND_ALONE  # owes: no channel, so a new one first
    with pytest.raises(PaymentError) as no_channel:
        link.send(get(3))
    assert no_channel.value.code == PaymentErrorCode.INSUFFICIENT_PAYMENT and link.inflight == 0
    link.opened(PayerChannel(make_params(capacity=50_000), PAYER_KEY), NEW_CHANNEL)
    assert link.admit(PRICE) is Admission.RESYNC  # the host's account of us, before paying on it
    link.adopt(state(link, total=0, consumed=PRICE, paid=PRICE, channel=NEW_CHANNEL))
    charge = link.send(get(2))
    assert charge.payment is not None and charge.payment.channel == NEW_CHANNEL and charge.payment.total == PRICE
    with pytest.raises(RuntimeError):
        make_link(channel=False).abandon()


def test_a_used_up_channel_is_refused_before_anything_is_signed() -> None:
    capacity = 10_000
    link = make_link(allowance=0, capacity=capacity)
    room = link.channel.params.max_total if link.channel is not None else 0
    big = get(1, price=room)
    link.settle(Answer(charge=link.send(big)))
    before = (link.paid, link.inflight, link.account)
    with pytest.raises(PaymentError) as used_up:
        link.send(get(2))
    assert used_up.value.code == PaymentErrorCode.TOTAL_OVER_CAPACITY and channel_refused(used_up.value.code)
    assert (link.paid, link.inflight, link.account) == before
    assert link.abandon().acknowledged == room


def test_channel_opens_per_host_are_bounded_per_period() -> None:
    budget = ChannelOpenBudget()
    for n in range(MAX_CHANNEL_OPENS_PER_PERIOD):
        assert budget.allows(100.0 + n)
        budget.spend(100.0 + n)
    assert not budget.allows(200.0)
    with pytest.raises(RuntimeError):
        budget.spend(200.0)
    assert budget.allows(100.0 + CHANNEL_OPEN_PERIOD)  # the oldest left the period
    with pytest.raises(ValueError):
        ChannelOpenBudget(limit=0)


def carry_and_refuse(link: PayerLink, carried: int, serial: int) -> Abandoned:
    """The host serves one request paying ``carried`` on the link's channel, then refuses the next as closed
    (its settle threshold, or an early close); the payer gives the channel up."""
    served = link.send(get(2 * serial, price=carried))
    assert served.payment is not None and served.signed == carried
    link.settle(Answer(charge=served))
    link.settle(Failure(charge=link.send(get(2 * serial + 1))))  # CHANNEL_EXPIRED
    abandoned = link.abandon()
    assert abandoned.acknowledged == carried and link.replacing == abandoned
    return abandoned


def reopen(link: PayerLink, budget: ChannelOpenBudget, now: float, serial: int) -> bool:
    """Step 4 of specs/payments.md §Channel recovery: open a new channel if the budget allows; resynchronise."""
    if not budget.allows(now, link.replacing):
        return False
    budget.spend(now, link.replacing)
    channel_id = ChannelId(serial.to_bytes(32, "big"), 0)
    link.opened(PayerChannel(make_params(capacity=2_000_000), PAYER_KEY), channel_id)
    assert link.replacing is None
    spent = link.account.paid
    link.adopt(state(link, total=0, consumed=spent, paid=spent, channel=channel_id))
    return True


def open_first(capacity: int = 2_000_000) -> tuple[PayerLink, ChannelOpenBudget]:
    link, budget = make_link(allowance=0, capacity=capacity), ChannelOpenBudget()
    budget.spend(0.0)  # the first channel, counted
    return link, budget


def test_channels_closed_at_the_settle_threshold_are_all_replaced_within_one_period() -> None:
    """A 1 GiB transfer to a host closing at its 100,000-sat threshold needs many replacements in one period."""
    link, budget = open_first()
    for serial in range(1, 4 * MAX_CHANNEL_OPENS_PER_PERIOD):
        abandoned = carry_and_refuse(link, 100_000, serial)
        assert abandoned.served and not budget.counts(abandoned)
        assert reopen(link, budget, float(serial), serial)


def test_channels_closed_early_still_hit_the_limit() -> None:
    link, budget = open_first()
    opens = 1
    for serial in range(1, 3 * MAX_CHANNEL_OPENS_PER_PERIOD):
        abandoned = carry_and_refuse(link, SERVED_CHANNEL_TOTAL - 1, serial)
        assert not abandoned.served and budget.counts(abandoned)
        if not reopen(link, budget, float(serial), serial):
            break
        opens += 1
    assert opens == MAX_CHANNEL_OPENS_PER_PERIOD
    assert budget.allows(CHANNEL_OPEN_PERIOD, link.replacing)  # the first open left the period


def test_served_and_early_closes_mixed_count_only_the_early_ones() -> None:
    link, budget = open_first()
    counted = 1
    for serial in range(1, 3 * MAX_CHANNEL_OPENS_PER_PERIOD):
        early = serial % 2 == 0
        carry_and_refuse(link, 1_000 if early else SERVED_CHANNEL_TOTAL, serial)
        if early and counted == MAX_CHANNEL_OPENS_PER_PERIOD:
            assert not reopen(link, budget, float(serial), serial)
            return
        assert reopen(link, budget, float(serial), serial)
        counted += early
    raise AssertionError("the early closes never hit the limit")


def test_a_served_channel_frees_one_open_only() -> None:
    link, budget = open_first()
    abandoned = carry_and_refuse(link, SERVED_CHANNEL_TOTAL, 1)
    budget.spend(1.0, abandoned)  # its funding then fails: no channel opened
    assert budget.counts(abandoned)  # the second try for the same channel is counted
    for n in range(MAX_CHANNEL_OPENS_PER_PERIOD - 1):
        budget.spend(2.0 + n, abandoned)
    assert not budget.allows(10.0, abandoned)


def test_a_small_channel_used_up_is_served_at_half_its_capacity() -> None:
    link, budget = open_first(capacity=20_000)
    assert link.channel is not None
    half = link.channel.params.max_total // 2
    assert half < SERVED_CHANNEL_TOTAL
    assert carry_and_refuse(link, half, 1).served
    link, budget = open_first(capacity=20_000)
    assert not carry_and_refuse(link, half - 1, 1).served


def test_the_payee_takes_no_payment_past_the_settle_threshold() -> None:
    host = payee.host_past_allowance()
    threshold = 120
    def decide(request: ChargeRequest) -> object:
        assert host.entry is not None
        return decide_charge(request, terms=payee.TERMS, account=host.account, channel=host.entry,
                             tip_height=payee.TIP, settle_threshold=threshold)

    # Below the threshold: accepted, even the payment that takes the total past it.
    first = decide(payee.least_paid_get(host, 2))
    assert isinstance(first, AcceptPayment)
    host.send(payee.least_paid_get(host, 2))
    assert host.total() < threshold
    crossing = decide(payee.least_paid_get(host, 3))
    assert isinstance(crossing, AcceptPayment) and crossing.channel.total >= threshold
    host.send(payee.least_paid_get(host, 3))
    # At the threshold: every later payment is refused as on a channel being closed.
    refusal = decide(payee.least_paid_get(host, 4))
    assert isinstance(refusal, Refuse) and refusal.code == PaymentErrorCode.CHANNEL_EXPIRED
    assert channel_refused(refusal.code)
    # Without a threshold (a node without a watcher) nothing changes.
    request = payee.least_paid_get(host, 4)
    assert isinstance(decide_charge(request, terms=payee.TERMS, account=host.account, channel=host.entry,
                                    tip_height=payee.TIP), AcceptPayment)
