"""Renewal decisions within a monthly budget (specs/erasure.md §9 Renewal).

Pure: the caller passes ``now``, what each file's renewal would cost and
what was spent this month.  Files are taken soonest lapse first; a file is
renewed whole or not at all, and only while the month's spending stays
within the budget.  Every file due that does not fit is at risk and named:
nothing lapses silently, nothing is renewed past the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

# Shares are renewed when their paid retention ends within this many seconds.
RENEW_AHEAD = 7 * 24 * 3600
MONTH_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalCandidate:
    map_address: bytes
    retained_until: int  # unix seconds
    cost: int  # sats to renew every share of the file, from the hosts' terms


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalPlan:
    renew: tuple[RenewalCandidate, ...]
    at_risk: tuple[RenewalCandidate, ...]  # due, but over the budget
    planned_spend: int


def month_of(now: int) -> int:
    """The budget period ``now`` falls in (30-day months since the epoch)."""
    return now // MONTH_SECONDS


def plan_renewals(files: list[RenewalCandidate], *, now: int, spent_this_month: int, budget: int,
                  renew_ahead: int = RENEW_AHEAD) -> RenewalPlan:
    if budget < 0 or spent_this_month < 0 or any(f.cost < 0 for f in files):
        raise ValueError("budgets and costs are non-negative sats")
    due = sorted((f for f in files if f.retained_until - now <= renew_ahead),
                 key=lambda f: (f.retained_until, f.map_address))
    renew: list[RenewalCandidate] = []
    at_risk: list[RenewalCandidate] = []
    spend = spent_this_month
    for f in due:
        if spend + f.cost <= budget:
            renew.append(f)
            spend += f.cost
        else:
            at_risk.append(f)
    return RenewalPlan(renew=tuple(renew), at_risk=tuple(at_risk), planned_spend=spend - spent_this_month)
