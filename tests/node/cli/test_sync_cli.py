"""``mu sync`` without a node: the node does the syncing, so the CLI says so and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import EXIT_FAILURE, EXIT_USAGE, main


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
