"""node/runtime/lock.py in one process: a flock conflicts across open files, even our own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.runtime.lock import DataDirLocked, hold_lock


def test_a_held_lock_refuses_at_once_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    with hold_lock(path):
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(DataDirLocked) as refused, hold_lock(path):
            pass
    assert refused.value.pid == os.getpid()
    assert str(os.getpid()) in str(refused.value) and str(tmp_path) in str(refused.value)


def test_a_released_lock_is_taken_again_and_its_file_stays(tmp_path: Path) -> None:
    path = tmp_path / "chain.lock"
    with hold_lock(path):
        pass
    assert path.exists()  # never removed: a new file would let two holders lock two inodes
    with hold_lock(path):
        assert path.read_text() == f"{os.getpid()}\n"


def test_a_lock_file_without_a_pid_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    with hold_lock(path):
        path.write_text("")  # a holder caught between taking the lock and writing its PID
        with pytest.raises(DataDirLocked) as refused, hold_lock(path):
            pass
    assert refused.value.pid is None and "another process" in str(refused.value)
