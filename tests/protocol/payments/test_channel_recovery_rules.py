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
    Admission,
    Answer,
    ChannelOpenBudget,
    Failure,
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
