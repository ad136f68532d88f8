"""``mu channels``: list the node's payment channels from its ledger."""

from __future__ import annotations

import argparse
import json

from node.cli import EXIT_NOT_FOUND, EXIT_OK, fail
from node.cli.ledger import open_existing_ledger


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("channels", help="list payment channels")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    ledger = open_existing_ledger(args.data_dir)
    if ledger is None:
        return fail("no ledger in this data dir (has `mu node` run here?)", EXIT_NOT_FOUND)
    with ledger:
        channels = ledger.export()["channels"]
    if args.json:
        print(json.dumps(channels, indent=2, sort_keys=True))
        return EXIT_OK
    if not channels:
        print("no channels")
    for c in channels:
        print(f"{c['channel_id']}  {c['role']:<5} {c['state']:<9} peer {c['peer']}  "
              f"total {c['total']} of {c['capacity']} sats  expiry height {c['expiry']}")
    return EXIT_OK
