"""A pure model of payer and payee across crashes, driven by hypothesis.

It uses the same rules the node code uses (``PeerAccount`` for the payee's
accounting and the payer's mirror, ``next_total`` for what the payer signs,
redelivery of the last charged chunk) and crashes the payee before or after
its durable record.  Whatever the crash points: the payer's signed total
never runs more than one chunk's price ahead of what it received, and in the
end both sides hold the same total, exactly the price of the service
beyond the free allowance.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.payments import PeerAccount, next_total

CRASHES = st.sampled_from(["none", "none", "before record", "after record"])


@settings(max_examples=300, deadline=None)
@given(
    allowance=st.integers(0, 500),
    steps=st.lists(st.tuples(st.integers(1, 200), st.lists(CRASHES, min_size=1, max_size=3)), min_size=1, max_size=40),
)
def test_crashes_never_cost_more_than_one_chunk(allowance: int, steps: list[tuple[int, list[str]]]) -> None:
    payee_account, accepted = PeerAccount(), 0  # what the payee has on disk
    mirror, acknowledged, signed = PeerAccount(), 0, 0  # the payer's view
    received_value = 0
    for index, (price, crashes) in enumerate(steps):
        chunk = index.to_bytes(4, "big")
        attempts = [*crashes, "none"]  # the last attempt gets through
        for crash in attempts:
            owed = 0 if mirror.is_redelivery(chunk, "get") else mirror.owed(price, allowance)
            total = next_total(owed=owed, acknowledged_total=acknowledged, signed_total=signed)
            if total is not None:
                signed = max(signed, total)
            # -- the payee
            redelivery = payee_account.is_redelivery(chunk, "get")
            if not redelivery:
                increment = 0 if total is None else total - accepted
                assert total is None or total > accepted  # never a replay after a resync
                assert increment >= payee_account.owed(price, allowance)
                if crash == "before record":
                    acknowledged, mirror = accepted, payee_account  # reconnect: CHANNEL_STATE
                    continue
                payee_account = payee_account.charge(chunk=chunk, kind="get", price=price, increment=increment,
                                                     allowance=allowance)
                accepted = total if total is not None else accepted
                if crash == "after record":
                    acknowledged, mirror = accepted, payee_account  # reconnect: CHANNEL_STATE
                    continue
            # -- served: the payer updates its mirror as the node's Payer does
            if total is not None:
                increment = total - acknowledged
                acknowledged = total
            else:
                increment = 0
            if not mirror.is_redelivery(chunk, "get"):
                mirror = PeerAccount(consumed=mirror.consumed + price, paid=mirror.paid + increment,
                                     last_chunk=chunk, last_kind="get")
            received_value += price
            break
        assert signed - max(0, received_value - allowance) <= max(p for p, _ in steps)
    assert accepted == signed == max(0, received_value - allowance)
