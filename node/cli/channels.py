"""``mu channels``: list payment channels; ``mu channels close ID``: settle one now.

Closing is the payee's move: ``close`` marks an open payee channel
``closing`` in the ledger and the running node's settlement watcher
co-signs the latest payment and broadcasts it on its next pass
(specs/payments.md §Settlement).  A payer cannot close early; its funds
come back by refund after the expiry height, which the watcher also does.
"""

from __future__ import annotations

import argparse
import json

from node.cli.exit_codes import EXIT_NOT_FOUND, EXIT_OK, EXIT_FAILURE, fail
from node.cli.local_backend import NO_LEDGER, open_existing_ledger
from node.runtime.config import resolve_data_dir
from protocol.payments.vocabulary import ChannelStatus, Role


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("channels", help="list payment channels, or close one (mu channels close ID)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)
    actions = p.add_subparsers(dest="channels_command", metavar="ACTION")
    close = actions.add_parser("close", help="close a channel we are paid through, now")
    close.add_argument("channel_id", help="channel id, <funding txid>:<vout>")
    close.set_defaults(func=run_close)


def run_list(args: argparse.Namespace) -> int:
    ledger = open_existing_ledger(resolve_data_dir(args.data_dir))
    if ledger is None:
        return fail(NO_LEDGER, EXIT_NOT_FOUND)
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


def run_close(args: argparse.Namespace) -> int:
    ledger = open_existing_ledger(resolve_data_dir(args.data_dir))
    if ledger is None:
        return fail(NO_LEDGER, EXIT_NOT_FOUND)
    with ledger:
        record = ledger.channel(args.channel_id)
        if record is None:
            return fail(f"no channel {args.channel_id}", EXIT_NOT_FOUND)
        if record.role != Role.PAYEE:
            return fail(f"only the payee can close {args.channel_id}; the node refunds it after height "
                        f"{record.expiry}", EXIT_FAILURE)
        if record.state != ChannelStatus.OPEN:
            return fail(f"channel {args.channel_id} is already {record.state}", EXIT_FAILURE)
        ledger.set_channel_state(args.channel_id, ChannelStatus.CLOSING)
    print(f"channel {args.channel_id} marked closing: the running node broadcasts its close "
          f"({record.total} sats) on its next settlement pass")
    return EXIT_OK
