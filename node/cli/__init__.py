"""The ``mu`` command line.

Each command group lives in its own module under ``node/cli/`` and exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` on them:
``func(args) -> int`` returns the exit code.  To add a group, write the module,
import it here and list it in ``COMMAND_MODULES``.

Exit codes (documented in the README, defined in ``node/cli/exit_codes.py``):
    0 ok, 1 operational error, 2 not found, 3 integrity failure, 4 usage error
    (the command line was not understood), 5 fewer replicas than asked
    (``mu add`` through a node), 141 stdout closed by its reader.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from node.cli import chain, channels, config, dht, files, init, ledger, name, network, store, ui, wallet
from node.cli import node as node_daemon  # not plain `node`: that would hide the top package
from node.cli.arguments import CommandLineParser
from node.cli.exit_codes import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTEGRITY,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNDER_REPLICATED,
    EXIT_USAGE,
    fail,
)

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_FAILURE", "EXIT_INTEGRITY", "EXIT_NOT_FOUND", "EXIT_OK",
           "EXIT_UNDER_REPLICATED", "EXIT_USAGE", "build_parser", "fail", "main"]

# Command-group modules, in the order they appear in `mu --help`.
COMMAND_MODULES: tuple[ModuleType, ...] = (
    init, node_daemon, config, network, ui, files, store, dht, name, channels, ledger, wallet, chain,
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
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


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail on a closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = int(func(args))
        sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mu store ls | head`: the reader has all it wanted.  Quiet, as `ls | head` is (README "Exit codes").
        _silence_stdout()
        return EXIT_BROKEN_PIPE
