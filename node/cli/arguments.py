"""How ``mu`` reads its command line: the parser class and the checked value types.

Every parser of ``mu`` is a :class:`CommandLineParser` (argparse builds the
sub-parsers from the top parser's class), so a command line that is not
understood exits with ``EXIT_USAGE`` (README "Exit codes") rather than
argparse's 2, which ``mu`` keeps for "not found".  The value types refuse
out-of-range numbers while parsing (``mu ledger --limit -5`` is a usage
error), so the commands never see them.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime, timezone
from collections.abc import Callable
from typing import NoReturn

from node.cli.exit_codes import EXIT_USAGE

MAX_PORT = 65_535


class CommandLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors exit with ``EXIT_USAGE``."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a decimal integer from ``low`` to ``high`` (no upper bound if None)."""
    wanted = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {wanted}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def positive_float(text: str) -> float:
    """An argparse type: a finite number of seconds (or other unit) above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a number above 0")
    return value


def power_of_two_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a power of two from ``low`` to ``high``.

    For chunk sizes (specs/chunks.md §3 Definitions and defaults).
    """
    in_range = int_in(low, high)

    def parse(text: str) -> int:
        value = in_range(text)
        if value & (value - 1):
            raise argparse.ArgumentTypeError(f"{value} is not a power of two from {low} to {high}")
        return value

    parse.__name__ = "integer"
    return parse


def unix_time_ns(text: str) -> int:
    """An argparse type: ISO 8601 (naive means UTC) or Unix seconds, as ns since the epoch (``mu folder restore --at``)."""
    try:
        return int(float(text) * 10**9)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither ISO 8601 nor Unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


non_negative_int = int_in(0)
positive_int = int_in(1)
port_number = int_in(0, MAX_PORT)
