"""Exit codes of ``mu`` (README "Exit codes") and the one way commands report a failure.

Kept apart from ``node/cli/__init__.py`` so that the command modules, which
the package imports, do not import the package back.
"""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_NOT_FOUND = 2
EXIT_INTEGRITY = 3


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Print ``mu: message`` to stderr and return ``code``."""
    print(f"mu: {message}", file=sys.stderr)
    return code
