"""``mu earnings`` and ``mu ledger``: read the node's payment ledger.

``mu earnings`` asks the data dir's backend (node/cli/backend.py): the
running node (``GET /v1/earnings``, from its open ledger) or, when no node
runs, the ledger file; the output is the same either way.  ``mu ledger`` opens the ledger read-mostly
(SQLite WAL lets it read beside the node's writer).  Amounts are int sats.
"""

from __future__ import annotations

import argparse
import json

from node.cli.arguments import non_negative_int
from node.cli.exit_codes import EXIT_NOT_FOUND, EXIT_OK, fail
from node.cli.backend import open_backend
from node.cli.results import BackendError, to_json
from node.runtime.config import resolve_data_dir

# Payments `mu ledger` prints in text mode unless --limit says otherwise.
DEFAULT_LIMIT = 50


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("earnings", help="sats earned, pending in open channels and settled on chain; service given and taken per peer")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_earnings)
    p = sub.add_parser("ledger", help="every channel, payment and settlement in the ledger")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=non_negative_int, default=DEFAULT_LIMIT,
                   help=f"payments to show in text mode, the latest (default {DEFAULT_LIMIT}; 0: none)")
    p.set_defaults(func=run_ledger)


def run_earnings(args: argparse.Namespace) -> int:
    try:
        report = open_backend(args.data_dir).earnings()
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    if args.json:
        print(to_json(report, indent=2))
        return EXIT_OK
    print(f"earned:  {report.earned} sats")
    print(f"pending: {report.pending} sats in open channels")
    print(f"settled: {report.settled} sats on chain")
    print(f"spent:   {report.spent} sats")
    if report.per_peer:
        print("\nper peer                                   earned   pending   settled     spent")
        for peer, row in report.per_peer.items():
            print(f"{peer}  {row.earned:>8} {row.pending:>9} {row.settled:>9} {row.spent:>9}")
    balances = report.balances
    if balances.per_peer:
        # specs/payments.md §Service balance: net > 0 is what the peer owes us, < 0 what we owe it.
        print("\nservice balance                             given     taken       net   paid in  paid out")
        for name, side in [*balances.per_peer.items(), ("total".ljust(40), balances.total)]:
            print(f"{name}  {side.given:>8} {side.taken:>9} {side.net:>9} {side.paid_in:>9} {side.paid_out:>9}")
    if report.per_day:
        print("\nper day (UTC)   earned")
        for day, amount in report.per_day.items():
            print(f"{day}  {amount:>8}")
    return EXIT_OK


def run_ledger(args: argparse.Namespace) -> int:
    # Imported here: `mu earnings`, in the same group, runs on a node's control API without the ledger (issue 22).
    from node.cli.local_backend import NO_LEDGER, open_existing_ledger

    ledger = open_existing_ledger(resolve_data_dir(args.data_dir))
    if ledger is None:
        return fail(NO_LEDGER, EXIT_NOT_FOUND)
    with ledger:
        dump = ledger.export()
    if args.json:
        print(json.dumps(dump, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"channels ({len(dump['channels'])}):")
    for c in dump["channels"]:
        print(f"  {c['channel_id']}  {c['role']:<5} {c['state']:<9} peer {c['peer'][:16]}  "
              f"total {c['total']}/{c['capacity']}  expiry {c['expiry']}")
    payments = dump["payments"][-args.limit:] if args.limit > 0 else []
    print(f"payments ({len(dump['payments'])}, last {len(payments)} shown):")
    for p in payments:
        print(f"  #{p['id']} {p['direction']:<3} {p['kind']:<3} chunk {p['chunk'][:16]}  price {p['price']}  "
              f"paid {p['amount']}  peer {p['peer'][:16]}")
    print(f"settlements ({len(dump['settlements'])}):")
    for s in dump["settlements"]:
        print(f"  {s['kind']:<6} {s['txid']}  {s['amount']} sats  {s['state']}  height {s['height']}")
    return EXIT_OK
