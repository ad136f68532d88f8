"""Hypothesis: any interleaving of service both ways, payments, acknowledgements and crashes keeps the two
views of a peer balance within the documented bound, and neither view of a debt past the disconnect threshold.

Two nodes A and B each hold a ``PeerBalance`` of the other and talk over one ordered session per direction
(a deque of messages); a crash drops every message in flight and both sides then resynchronise from each
other's signed acknowledgement (specs/payments.md §Service balance, "After a crash").
"""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.identity import Identity
from protocol.payments import balance
from protocol.payments.balance import BalanceAck, BalanceError, BalanceErrorCode, BalanceTerms, PeerBalance

NODES = (Identity(b"\x01" * 32), Identity(b"\x02" * 32))
Message = tuple[str, int] | tuple[str, BalanceAck]


class BalancePair(RuleBasedStateMachine):
    """Node 0 and node 1 serve, pay and acknowledge each other in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.terms = BalanceTerms()
        self.views = [PeerBalance(), PeerBalance()]
        self.wires: list[deque[Message]] = [deque(), deque()]  # wires[i]: messages from node i to the other
        self.freeloader = False  # node 1 never pays: only node 0's refusals stop it

    @initialize(payment=st.integers(1, 8_000), window=st.integers(1, 4_000), extra=st.integers(0, 8_000),
                freeloader=st.booleans())
    def pick_terms(self, payment: int, window: int, extra: int, freeloader: bool) -> None:
        self.terms = BalanceTerms(payment_threshold=payment, in_flight_limit=window,
                                  disconnect_threshold=payment + 2 * window + extra)
        self.freeloader = freeloader

    def _ack(self, node: int) -> BalanceAck:
        view = self.views[node]
        return BalanceAck.sign(NODES[node], peer=NODES[1 - node].node_id, service_received=view.taken,
                               payment_received=view.paid_in)

    @rule(server=st.integers(0, 1), price=st.integers(0, 3_000))
    def serve(self, server: int, price: int) -> None:
        view = self.views[server]
        try:
            self.views[server] = view.serve(price, self.terms)
        except BalanceError as refusal:
            if refusal.code is BalanceErrorCode.DISCONNECT_THRESHOLD:
                assert view.net + price > self.terms.disconnect_threshold
            else:
                assert refusal.code is BalanceErrorCode.WINDOW_FULL
                assert view.given - view.acked_given + price > self.terms.in_flight_limit
            return
        self.wires[server].append(("service", price))

    @rule(payer=st.integers(0, 1))
    def pay_when_due(self, payer: int) -> None:
        if payer == 1 and self.freeloader:
            return
        view = self.views[payer]
        due = view.payment_due(self.terms)
        if due == 0:
            assert -view.net < self.terms.payment_threshold or view.paid_out > view.acked_paid_out
            return
        assert due == -view.net >= self.terms.payment_threshold  # exactly the imbalance
        self.views[payer] = view.pay(due)
        assert self.views[payer].net == 0
        self.wires[payer].append(("payment", due))

    @rule(server=st.integers(0, 1), price=st.integers(1, 3_000))
    def serve_and_deliver(self, server: int, price: int) -> None:
        """A whole round trip, so that long runs of service one way come up often."""
        self.serve(server, price)
        while self.wires[server] or self.wires[1 - server]:
            self.deliver(server)
            self.deliver(1 - server)

    @rule(sender=st.integers(0, 1))
    def deliver(self, sender: int) -> None:
        if not self.wires[sender]:
            return
        kind, value = self.wires[sender].popleft()
        receiver = 1 - sender
        if kind == "ack":
            assert isinstance(value, BalanceAck) and value.verify(NODES[sender].public_key)
            self.views[receiver] = self.views[receiver].acknowledge(value)
            return
        assert isinstance(value, int)
        view = self.views[receiver]
        self.views[receiver] = view.take(value) if kind == "service" else view.receive_payment(value)
        self.wires[receiver].append(("ack", self._ack(receiver)))

    @rule(victim=st.integers(0, 1), lost_acks=st.booleans())
    def crash(self, victim: int, lost_acks: bool) -> None:
        """kill -9 of ``victim``: the session and all in flight are gone; reconnect and resynchronise."""
        self.wires = [deque(), deque()]
        view = self.views[victim]
        if lost_acks:  # acknowledgements received are written lazily; the restart may not have them
            self.views[victim] = PeerBalance(given=view.given, taken=view.taken, paid_out=view.paid_out,
                                             paid_in=view.paid_in)
        gap = self.views[0].net + self.views[1].net
        assert 0 <= gap <= balance.view_gap_bound(self.terms)
        acks = [self._ack(0), self._ack(1)]
        for node in (0, 1):
            self.views[node] = self.views[node].resync(BalanceAck.parse(acks[1 - node].serialize()))
        assert self.views[0].net == -self.views[1].net

    @invariant()
    def debts_stay_within_the_disconnect_threshold(self) -> None:
        for view in self.views:
            assert view.net <= self.terms.disconnect_threshold

    @invariant()
    def views_differ_by_what_is_in_flight(self) -> None:
        gap = self.views[0].net + self.views[1].net
        assert 0 <= gap <= self.views[0].unacknowledged + self.views[1].unacknowledged
        assert gap <= balance.view_gap_bound(self.terms)
        for node in (0, 1):
            service = sum(v for k, v in self.wires[node] if k == "service" and isinstance(v, int))
            payment = sum(v for k, v in self.wires[node] if k == "payment" and isinstance(v, int))
            assert self.views[node].given - self.views[1 - node].taken == service
            assert self.views[node].paid_out - self.views[1 - node].paid_in == payment
            assert self.views[node].given - self.views[node].acked_given <= self.terms.in_flight_limit


BalancePair.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestBalancePair = BalancePair.TestCase
