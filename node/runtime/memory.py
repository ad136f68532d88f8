"""Process-wide memory settings of a running node.

glibc's ``malloc`` gives each thread that allocates an arena of its own, up
to eight per core, and an arena keeps the large blocks freed in it for the
next allocation there.  A node's worker threads handle buffers of a chunk's
size (a fetch decrypts each 1 MiB data chunk in whichever worker thread is
free), so every arena came to hold several of them: the fetching node's
peak RSS in a 256 MiB paid get, from 1 and from 3 hosts on
``scripts/bench-vs-bittorrent``'s devnet (its sittings, and alternating runs
of a throwaway driver on the same devnet), went from 101-141 MiB to 135-178
MiB once its chunks were decrypted in many threads instead of one.  One
arena keeps it at 108-140 MiB.  Python allocates under its interpreter
lock, so threads seldom wait for the arena's own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("mu.node")

# mallopt's parameter for the most arenas (glibc's malloc.h).
M_ARENA_MAX = -8
# Arenas a node's process uses (see above).
NODE_MALLOC_ARENAS = 1


def limit_malloc_arenas(arenas: int = NODE_MALLOC_ARENAS) -> bool:
    """Cap the C allocator's arenas; True if it took the setting.

    Call it before threads start.  A ``MALLOC_ARENA_MAX`` in the
    environment is the user's choice and is left as it is; a C library
    without ``mallopt`` (not glibc) is left alone too.
    """
    if arenas < 1:
        raise ValueError("at least one arena")
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = bool(mallopt(M_ARENA_MAX, arenas))
    if not taken:
        log.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
    return taken
