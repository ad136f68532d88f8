"""node/runtime/lock.py in one process: a flock conflicts across open files, even our own."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from node.runtime import lock
from node.runtime.lock import DataDirLocked, hold_lock, holder


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


def test_the_holder_is_named_and_nobody_is_found_where_nobody_holds(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    assert holder(path) is None  # no file: not held, and the probe creates none
    assert not path.exists()
    with hold_lock(path):
        found = holder(path)
        assert isinstance(found, DataDirLocked) and found.pid == os.getpid()
    assert holder(path) is None
    with hold_lock(path):  # the probe left nothing held
        pass


def test_a_probe_at_the_moment_a_node_starts_does_not_make_it_give_up(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node.lock"
    path.write_text("")
    probe = os.open(path, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a command's probe, caught holding its shared lock
    waits: list[float] = []

    def probe_ends(seconds: float) -> None:  # the probe lets go while the node waits between tries
        waits.append(seconds)
        os.close(probe)

    monkeypatch.setattr(lock, "sleep", probe_ends)
    with hold_lock(path):
        assert path.read_text() == f"{os.getpid()}\n"
    assert waits == [lock.LOCK_RETRY_SECONDS]


def test_a_lock_still_held_after_every_try_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node.lock"
    waits: list[float] = []
    monkeypatch.setattr(lock, "sleep", waits.append)
    with hold_lock(path):
        with pytest.raises(DataDirLocked), hold_lock(path):
            pass
    assert len(waits) == lock.LOCK_TRIES - 1
