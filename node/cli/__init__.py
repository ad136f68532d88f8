"""The ``mu`` command line.

Each command group lives in its own module under ``node/cli/`` and exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` on them:
``func(args) -> int`` returns the exit code.  To add a group, write the module
and list it, with the commands it adds, in ``COMMAND_GROUPS``.  ``mu COMMAND``
imports COMMAND's group alone: importing every group (and through them the
whole node) was most of each command's start-up, while a command that a
running node serves needs none of the node's own code (issue 22).

Exit codes (documented in the README, defined in ``node/cli/exit_codes.py``):
    0 ok, 1 operational error, 2 not found, 3 integrity failure, 4 usage error
    (the command line was not understood), 5 fewer replicas than asked
    (``mu add`` through a node), 141 stdout closed by its reader.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

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
           "EXIT_UNDER_REPLICATED", "EXIT_USAGE", "build_parser", "command_of", "fail", "main"]

# Command groups, in the order they appear in `mu --help`: the module under node/cli/ and the
# commands its `register` adds (tests/node/cli/test_startup.py checks that they agree).
COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("init", ("init",)),
    ("node", ("node",)),
    ("config", ("config",)),
    ("network", ("status", "pin")),
    ("ui", ("ui",)),
    ("files", ("add", "get")),
    ("health", ("files",)),
    ("folder", ("folder",)),
    ("sync", ("sync",)),
    ("store", ("store",)),
    ("dht", ("peers", "dht")),
    ("name", ("name",)),
    ("channels", ("channels",)),
    ("ledger", ("earnings", "ledger")),
    ("wallet", ("wallet",)),
    ("chain", ("chain",)),
)
GROUP_OF_COMMAND: dict[str, str] = {command: group for group, commands in COMMAND_GROUPS for command in commands}
DATA_DIR_OPTION = "--data-dir"


def command_of(argv: Sequence[str]) -> str | None:
    """The command a ``mu`` command line runs, or None when its parse needs every group.

    Only ``--data-dir VALUE`` (or a prefix of it, as argparse allows) may come before the
    command; any other option first (``-h``, a typo) and an unknown command take the whole
    parser, so that the help and the errors are those of the whole ``mu``.
    """
    words = iter(argv)
    for word in words:
        name, has_value, _ = word.partition("=")
        if len(name) > 2 and DATA_DIR_OPTION.startswith(name):
            if not has_value:
                next(words, None)
            continue
        return word if word in GROUP_OF_COMMAND else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``mu``: with every command group, or with only ``command``'s group (see ``command_of``)."""
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
    for group, _ in COMMAND_GROUPS:
        if command is None or GROUP_OF_COMMAND[command] == group:
            importlib.import_module(f"node.cli.{group}").register(sub)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail on a closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(words))
    args = parser.parse_args(words)
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
