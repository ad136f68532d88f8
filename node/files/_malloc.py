"""Keep chunk-sized buffers in the C heap between chunks (glibc only).

Adding and getting a file allocate and free a few chunk-sized buffers per
chunk (sealed chunks, stored bytes, plaintexts).  glibc's malloc serves
blocks of that size with fresh ``mmap`` regions and trims freed heap tops
back to the kernel, so every chunk pays for zeroed pages faulted in again;
on the reference VM that was a third of the system time of ``mu add`` and
``mu get``.  Raising the mmap and trim thresholds above the largest chunk
lets the freed blocks be reused instead.  Memory stays bounded: the heap
holds at most what the bounded pipelines hold at once (specs/chunks.md
§8.5 Bounds) plus ``HEAP_KEEP_BYTES`` of free space at its top.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading

from node.store import MAX_CHUNK_BYTES

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap, not from their own mmap.
HEAP_BLOCK_LIMIT = MAX_CHUNK_BYTES + 64 * 1024
# Free bytes a heap may keep at its top before returning them to the kernel.
HEAP_KEEP_BYTES = 32 * 1024 * 1024

_done = False
_lock = threading.Lock()


def keep_chunk_buffers() -> bool:
    """Tune malloc once per process; True if it was tuned (glibc), False elsewhere."""
    global _done
    with _lock:
        if _done:
            return True
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = libc.mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT) and libc.mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES)
        except (OSError, AttributeError):
            return False
        _done = bool(ok)
        return _done
