"""Read-only summaries of the ledger: earnings and the full export.

``earnings`` answers `mu earnings`: sats earned through payments received,
sats still pending in open payee channels (earned but not yet on chain) and
sats settled on chain by confirmed closes; per peer and per UTC day; and the
service balance with each peer (``balances``).  ``export`` answers `mu ledger
--json`.  (specs/payments.md §Ledger, §Service balance.)
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from protocol.payments.balance import PeerBalance
from protocol.payments.vocabulary import Direction

Reader = Callable[..., list[tuple[Any, ...]]]

OPEN_STATES = ("open", "closing")


def _day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d")


def earnings(read: Reader) -> dict[str, Any]:
    """Totals earned / pending / settled (int sats), per peer and per day."""
    per_peer: dict[str, dict[str, int]] = {}

    def peer(p: str) -> dict[str, int]:
        return per_peer.setdefault(p, {"earned": 0, "pending": 0, "settled": 0, "spent": 0})

    for p, direction, amount in read(
        "SELECT peer, direction, COALESCE(SUM(amount), 0) FROM payments GROUP BY peer, direction"
    ):
        peer(p)["earned" if direction == "in" else "spent"] += int(amount)
    for p, total in read(
        "SELECT peer, COALESCE(SUM(total), 0) FROM channels WHERE role = 'payee' AND state IN (?, ?) GROUP BY peer",
        OPEN_STATES,
    ):
        peer(p)["pending"] += int(total)
    for p, amount in read(
        "SELECT c.peer, COALESCE(SUM(s.amount), 0) FROM settlements s JOIN channels c USING (channel_id) "
        "WHERE c.role = 'payee' AND s.kind = 'close' AND s.state = 'confirmed' GROUP BY c.peer"
    ):
        peer(p)["settled"] += int(amount)
    per_day: dict[str, int] = {}
    for at, amount in read("SELECT at, amount FROM payments WHERE direction = 'in' AND amount > 0"):
        key = _day(at)
        per_day[key] = per_day.get(key, 0) + int(amount)
    return {
        "earned": sum(v["earned"] for v in per_peer.values()),
        "pending": sum(v["pending"] for v in per_peer.values()),
        "settled": sum(v["settled"] for v in per_peer.values()),
        "spent": sum(v["spent"] for v in per_peer.values()),
        "per_peer": dict(sorted(per_peer.items())),
        "per_day": dict(sorted(per_day.items())),
        "balances": balances(read),
    }


_BALANCE_KEYS = ("given", "taken", "net", "paid_in", "paid_out")


def balances(read: Reader) -> dict[str, Any]:
    """Service given to and taken from each peer, the net and the sats paid each way, and their totals.

    From the ledger (specs/payments.md §Service balance, "State"): ``given``
    is the value of the service we gave the peer, charged (its account
    ``in``) or kept in its service balance (table ``balances``), ``taken``
    the same the other way (account ``out`` and the balance); ``paid_in``
    and ``paid_out`` are the channel increments each way, per request or
    settling a balance; ``net`` is what the peer owes us (negative: what we
    owe it), by ``PeerBalance.net``.
    """
    sums: dict[str, dict[str, int]] = {}

    def row(peer: str) -> dict[str, int]:
        return sums.setdefault(peer, {"given": 0, "taken": 0, "paid_in": 0, "paid_out": 0})

    for peer, direction, consumed, paid in read("SELECT peer, direction, consumed, paid FROM accounts"):
        if direction == Direction.IN:
            row(peer)["given"] += int(consumed)
            row(peer)["paid_in"] += int(paid)
        else:
            row(peer)["taken"] += int(consumed)
            row(peer)["paid_out"] += int(paid)
    for peer, given, taken in read("SELECT peer, given, taken FROM balances"):
        row(peer)["given"] += int(given)
        row(peer)["taken"] += int(taken)
    per_peer = {peer: {**sums[peer], "net": PeerBalance(**sums[peer]).net} for peer in sorted(sums)}
    totals = {key: sum(r[key] for r in per_peer.values()) for key in _BALANCE_KEYS}
    return {**totals, "per_peer": per_peer}


def export(read: Reader) -> dict[str, Any]:
    """Every channel, payment and settlement as JSON-ready values."""
    channels = [
        {
            "channel_id": r[0], "role": r[1], "peer": r[2], "state": r[3], "capacity": r[4], "total": r[5],
            "payer_sig": r[6].hex() if r[6] is not None else None, "funding_txid": r[7], "funding_vout": r[8],
            "expiry": r[9], "opened_at": r[10], "updated_at": r[11],
        }
        for r in read(
            "SELECT channel_id, role, peer, state, capacity, total, payer_sig, funding_txid, funding_vout, "
            "expiry, opened_at, updated_at FROM channels ORDER BY opened_at, channel_id"
        )
    ]
    payment_keys = ("id", "peer", "direction", "kind", "chunk", "price", "amount", "channel_id", "total", "at")
    payments = [
        dict(zip(payment_keys, r))
        for r in read(f"SELECT {', '.join(payment_keys)} FROM payments ORDER BY id")
    ]
    settlement_keys = ("channel_id", "kind", "txid", "amount", "state", "height", "at")
    settlements = [
        dict(zip(settlement_keys, r))
        for r in read(f"SELECT {', '.join(settlement_keys)} FROM settlements ORDER BY id")
    ]
    return {"channels": channels, "payments": payments, "settlements": settlements}
