"""``mu status``: ask the running node how it is (specs/network.md §6).

The command talks to the node through its control API (node/control.py),
found through the data dir's ``control.port`` and ``control.token`` files.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import trio

from node.cli import EXIT_OK, EXIT_USAGE, fail
from node.config import resolve_data_dir
from node.control import ControlClient, ControlError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="show the running node's status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_status)


def call_node(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call the node of ``args.data_dir`` once; raises ControlError (NodeNotRunning if none)."""
    client = ControlClient.from_data_dir(resolve_data_dir(args.data_dir))
    return trio.run(client.call, method, path, body)


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
        reply = call_node(args, "GET", "status")
    except ControlError as exc:
        return fail(exc.message, EXIT_USAGE)
    if args.json:
        print(json.dumps(reply, sort_keys=True))
    else:
        _print_tree(reply)
    return EXIT_OK
