"""The ``mu`` command line.

Each command group lives in its own module under ``node/cli/`` and exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` on them:
``func(args) -> int`` returns the exit code.  To add a group, write the module
and list it in ``COMMAND_MODULES``.

Exit codes (documented in the README):
    0 ok, 1 usage or operational error, 2 not found, 3 integrity failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_NOT_FOUND = 2
EXIT_INTEGRITY = 3

# Command-group modules, in the order they appear in `mu --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "node.cli.init",
    "node.cli.node",
    "node.cli.network",
    "node.cli.files",
    "node.cli.store",
    "node.cli.dht",
    "node.cli.channels",
    "node.cli.ledger",
    "node.cli.wallet",
    "node.cli.chain",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mu",
        description="mu: encrypted, content-addressed storage paid in satoshis",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="node data directory (default: $MU_DATA_DIR or the platform's user data dir)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print ``mu: message`` to stderr and return ``code``."""
    print(f"mu: {message}", file=sys.stderr)
    return code
