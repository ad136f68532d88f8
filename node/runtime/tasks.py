"""A nursery for a body's helper tasks, whose errors stay the body's own.

Trio wraps whatever leaves a nursery in an exception group.  When the
nursery's own tasks raise nothing (a log line on a timer, accept loops that
handle their errors), what comes out is the body's exception alone, and
callers catching its type (``TooSlowError``, ``InsufficientFunds``) should
see it as itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def helper_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose tasks are cancelled when the body ends; a single error comes out unwrapped.

    For tasks that raise nothing themselves: an exception group holding one
    exception is the body's (or a task's start-up) error, raised as itself.
    """
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
