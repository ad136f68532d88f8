"""The node's cap on malloc arenas (node/runtime/memory.py), each case in a fresh process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CALL = "from node.runtime.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


def _call(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", CALL], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt's M_ARENA_MAX is glibc's")
def test_glibc_takes_the_cap() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _call(env) == "True"


def test_a_users_malloc_arena_max_is_left_as_it_is() -> None:
    assert _call(dict(os.environ, MALLOC_ARENA_MAX="4")) == "False"


def test_no_arenas_is_refused() -> None:
    from node.runtime.memory import limit_malloc_arenas

    with pytest.raises(ValueError):
        limit_malloc_arenas(0)
