"""Paid renewal of k-of-n files within a monthly budget (specs/erasure.md §9 Renewal).

A share's paid retention is extended by paying its host's PUT again, as a
renewal (a PUT charged as kind renew, named by a fresh id, so never taken
for a free redelivery of the share's first PUT): a host that already holds
the chunk only moves its retention forward (node/store/retention.py
``put_retained``).  What each file's renewal costs
comes from its hosts' terms (``put_price`` of each share); the decisions are
:func:`protocol.erasure.plan_renewals`'s.  Before each PUT the month's
spending plus that PUT's price is checked against the budget again, so a
price that moved cannot carry the spending past it: the file is then at
risk instead.  The month's spending is kept in ``DATA_DIR/erasure/spent.json``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from node.exchange.paying import PaidPeers
from node.files.audit import Auditor
from node.transport import TransportError
from protocol.erasure import RENEW_AHEAD, RenewalCandidate, month_of, plan_renewals
from protocol.payments import PaymentError, PriceTooHigh

log = logging.getLogger("mu.renewal")

SPENT_FILE = "spent.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalReport:
    renewed: tuple[bytes, ...]  # map addresses
    at_risk: tuple[bytes, ...]  # due but over the budget (or a host could not be paid)
    sats_spent: int
    spent_this_month: int


def _spent_path(auditor: Auditor) -> Path:
    return auditor.book.dir / SPENT_FILE


def spent_in_month(auditor: Auditor, month: int) -> int:
    path = _spent_path(auditor)
    raw = json.loads(path.read_text()) if path.exists() else {}
    return int(raw.get(str(month), 0))


def _save_spent(auditor: Auditor, month: int, sats: int) -> None:
    path = _spent_path(auditor)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({str(month): sats}))  # only the current month matters
    os.replace(tmp, path)


async def _quote(auditor: Auditor, paid: PaidPeers, map_address: bytes) -> tuple[int, int] | None:
    """(sats to renew every share, shortest retention in seconds) from the hosts' terms; None if a host is gone."""
    record = auditor.book.load(map_address)
    if record is None:
        return None
    stripe_map = await trio.to_thread.run_sync(auditor.stripe_map, map_address)
    cost, retention = 0, None
    for index, (stripe, hosts) in enumerate(zip(stripe_map.stripes, record.hosts)):
        for i, host in enumerate(hosts):
            if (index, i) in record.padding:
                continue
            session = await auditor.dialer.session(host) if host else None
            if session is None:
                return None
            try:
                terms = (await paid.link(session)).terms
            except (TransportError, PaymentError, PriceTooHigh):
                return None
            cost += terms.put_price(stripe.block_size)
            retention = terms.retention_seconds if retention is None else min(retention, terms.retention_seconds)
    return cost, retention or 0


async def retention_of(auditor: Auditor, paid: PaidPeers, map_address: bytes) -> int:
    """Seconds the file's shares are paid for from now (the shortest of its hosts' terms); 0 if unknown."""
    quote = await _quote(auditor, paid, map_address)
    return 0 if quote is None else quote[1]


async def renew_files(auditor: Auditor, paid: PaidPeers, *, now: int, budget: int,
                      renew_ahead: int = RENEW_AHEAD) -> RenewalReport:
    """Renew every file due (lapsing within ``renew_ahead`` s), soonest lapse first, within ``budget`` sats this month."""
    month = month_of(now)
    spent = spent_in_month(auditor, month)
    candidates, retention = [], {}
    at_risk: list[bytes] = []
    for map_address in auditor.book.files():
        record = auditor.book.load(map_address)
        if record is None:
            continue
        quote = await _quote(auditor, paid, map_address)
        if quote is None:  # a host is gone: repair first (specs/erasure.md §8); the file is at risk meanwhile
            at_risk.append(map_address)
            continue
        candidates.append(RenewalCandidate(map_address=map_address, retained_until=record.retained_until, cost=quote[0]))
        retention[map_address] = quote[1]
    plan = plan_renewals(candidates, now=now, spent_this_month=spent, budget=budget, renew_ahead=renew_ahead)
    at_risk += [c.map_address for c in plan.at_risk]
    renewed: list[bytes] = []
    total = 0
    for candidate in plan.renew:
        ok, sats = await _renew_one(auditor, paid, candidate.map_address, budget - spent)
        spent += sats
        total += sats
        _save_spent(auditor, month, spent)
        record = auditor.book.load(candidate.map_address)
        if record is not None:
            auditor.book.save(replace(record, sats_spent=record.sats_spent + sats,
                                      retained_until=now + retention[candidate.map_address] if ok
                                      else record.retained_until))
        (renewed if ok else at_risk).append(candidate.map_address)
    for map_address in at_risk:
        log.warning("file with stripe map %s is at risk: its renewal is over the budget or a host is gone",
                    map_address.hex())
    return RenewalReport(renewed=tuple(renewed), at_risk=tuple(at_risk), sats_spent=total, spent_this_month=spent)


async def _renew_one(auditor: Auditor, paid: PaidPeers, map_address: bytes, left: int) -> tuple[bool, int]:
    """Pay every share's PUT again; stops before a PUT that would pass ``left`` sats. (all renewed, sats paid)."""
    record = auditor.book.load(map_address)
    assert record is not None
    stripe_map = await trio.to_thread.run_sync(auditor.stripe_map, map_address)
    sats = 0
    for index, hosts in enumerate(record.hosts):
        shares = await auditor.shares(map_address, stripe_map, index)
        for i, host in enumerate(hosts):
            if (index, i) in record.padding:
                continue
            session = await auditor.dialer.session(host)
            if session is None:
                return False, sats
            try:
                link = await paid.link(session)
                if sats + link.terms.put_price(len(shares[i])) > left:
                    return False, sats
                # Its own charge, named by a fresh id: a PUT of the share would be a free redelivery
                # while the host's latest charges still hold the share's first PUT.
                paid_now = await paid.renew(session, stripe_map.stripes[index].shares[i], shares[i],
                                            auditor.random_bytes(32))
            except (TransportError, PaymentError, PriceTooHigh) as exc:
                log.info("renewal PUT to %s failed: %s", host.hex(), exc)
                return False, sats
            sats += paid_now
    return True, sats
