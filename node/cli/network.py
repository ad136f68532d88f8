"""``mu status`` and ``mu pin``: commands that need the running node (specs/network.md §6 Control API).

Both go through the data dir's backend (node/cli/backend.py); without a
running node it answers that one must be started with ``mu node``.
"""

from __future__ import annotations

import argparse
from typing import Any

from node.cli.arguments import non_negative_int
from node.cli.backend import open_backend
from node.cli.exit_codes import EXIT_OK, fail
from node.cli.progress import progress_display
from node.cli.results import BackendError, to_json, to_json_value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="show the running node's status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_status)
    p = sub.add_parser("pin", help="make the running node fetch a file, host it and earn from it")
    p.add_argument("link", help="mu:ROOT#KEY link, or a bare root (the node hosts the ciphertext without reading it)")
    p.add_argument("--max-price", type=non_negative_int, default=None,
                   help="most sats per MiB paid to a host (default: the node's max_price_get setting)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run_pin)


def _print_tree(value: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                print(f"{pad}{key}:")
                _print_tree(item, indent + 1)
            else:
                print(f"{pad}{key}: {item}")
    elif isinstance(value, list):
        for item in value:
            _print_tree(item, indent) if isinstance(item, (dict, list)) else print(f"{pad}- {item}")
    else:
        print(f"{pad}{value}")


def run_status(args: argparse.Namespace) -> int:
    try:
        status = open_backend(args.data_dir).status()
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    if args.json:
        print(to_json(status))
    else:
        _print_tree(to_json_value(status))
    return EXIT_OK


def run_pin(args: argparse.Namespace) -> int:
    backend = open_backend(args.data_dir)
    try:
        with progress_display(quiet=args.quiet or args.json) as on_progress:
            result = backend.pin(args.link, max_price=args.max_price, on_progress=on_progress)
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    print(to_json(result) if args.json else f"pinned {args.link[:24]}...: {result.fetch.size} bytes, hosting")
    return EXIT_OK
