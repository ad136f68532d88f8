"""``mu sync`` without a node: the node does the syncing, so the CLI says so and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import EXIT_FAILURE, EXIT_USAGE, main
from node.cli.sync import _print_status


def test_sync_commands_need_a_running_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for argv in (["sync", "add", str(folder)], ["sync", "ls"], ["sync", "status", str(folder)],
                 ["sync", "pause", str(folder)], ["sync", "remove", str(folder)]):
        assert main(["--data-dir", str(tmp_path / "data"), *argv]) == EXIT_FAILURE
        assert "needs a running node" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


def test_sync_without_a_command_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tmp_path), "sync"])
    assert exc.value.code == EXIT_USAGE


def test_the_state_a_folder_is_said_to_be_in(capsys: pytest.CaptureFixture[str]) -> None:
    base = {"path": "/d", "paused": False, "read_only": False, "watching": True, "files": 1, "bytes": 5,
            "pending_up": 0, "pending_down": 0, "devices_seen": [], "conflict_count": 0, "conflicts": [],
            "last_round": {"time_ns": 1}, "unreadable_count": 1,
            "unreadable": [{"path": "locked.txt", "reason": "Permission denied"}]}
    cases = [({}, "up to date"), ({"pending_up": 2}, "syncing"), ({"pending_down": 1}, "syncing"),
             ({"last_round": {"error": "StoreFull: store full"}}, "failing"), ({"paused": True}, "paused"),
             ({"read_only": True, "pending_up": 3}, "up to date (read-only)")]
    for change, said in cases:
        _print_status({**base, **change})
        out = capsys.readouterr().out
        assert out.startswith(f"/d  {said}\n"), (change, out)
        assert "    locked.txt: Permission denied" in out
