"""The ``mu`` command line.

Each command group lives in its own module under ``node/cli/`` and exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` on them:
``func(args) -> int`` returns the exit code.  To add a group, write the module,
import it here and list it in ``COMMAND_MODULES``.

Exit codes (documented in the README, defined in ``node/cli/exit_codes.py``):
    0 ok, 1 usage or operational error, 2 not found, 3 integrity failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from node.cli import chain, channels, config, dht, files, init, ledger, network, store, wallet
from node.cli import node as node_daemon  # not plain `node`: that would hide the top package
from node.cli.exit_codes import EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, fail

__all__ = ["EXIT_INTEGRITY", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "build_parser", "fail", "main"]

# Command-group modules, in the order they appear in `mu --help`.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    init, node_daemon, config, network, files, store, dht, channels, ledger, wallet, chain,
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
    for module in COMMAND_MODULES:
        module.register(sub)
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
