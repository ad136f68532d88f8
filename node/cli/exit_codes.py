"""Exit codes of ``mu`` (README "Exit codes") and the one way commands report a failure.

Kept apart from ``node/cli/__init__.py`` so that the command modules, which
the package imports, do not import the package back.
"""

from __future__ import annotations

import signal
import sys

EXIT_OK = 0
EXIT_FAILURE = 1  # the command was understood but could not be done
EXIT_NOT_FOUND = 2
EXIT_INTEGRITY = 3
EXIT_USAGE = 4  # the command line was not understood: an unknown option, a bad or out-of-range value
EXIT_UNDER_REPLICATED = 5  # `mu add` through a node: some chunk reached fewer replicas than asked
# stdout was closed by its reader (`mu store ls | head`): what a shell reports for a SIGPIPE death.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def fail(message: str, code: int = EXIT_FAILURE) -> int:
    """Print ``mu: message`` to stderr and return ``code``."""
    print(f"mu: {message}", file=sys.stderr)
    return code
