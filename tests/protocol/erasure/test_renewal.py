"""Renewal within a budget (specs/erasure.md §9): soonest lapse first, nothing past the budget."""

from __future__ import annotations

from protocol.erasure import RENEW_AHEAD, RenewalCandidate, plan_renewals

NOW = 1_000_000_000


def candidate(name: bytes, lapse_in: int, cost: int) -> RenewalCandidate:
    return RenewalCandidate(map_address=name * 32, retained_until=NOW + lapse_in, cost=cost)


def test_due_files_fit_the_budget_soonest_first_and_the_rest_are_at_risk() -> None:
    files = [candidate(b"a", 3600, 400), candidate(b"b", 60, 500), candidate(b"c", 7200, 300),
             candidate(b"d", RENEW_AHEAD + 1, 10)]
    plan = plan_renewals(files, now=NOW, spent_this_month=100, budget=1000)
    assert [f.map_address[:1] for f in plan.renew] == [b"b", b"a"]  # d is not due yet
    assert [f.map_address[:1] for f in plan.at_risk] == [b"c"]
    assert plan.planned_spend == 900 and 100 + plan.planned_spend <= 1000


def test_nothing_is_renewed_past_the_budget() -> None:
    plan = plan_renewals([candidate(b"a", 10, 50)], now=NOW, spent_this_month=980, budget=1000)
    assert plan.renew == () and [f.map_address[:1] for f in plan.at_risk] == [b"a"] and plan.planned_spend == 0
