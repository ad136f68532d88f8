"""``mu folder`` without a node: create, snapshot, log, diff, restore on the local store, and refused links."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from node.cli import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, main
from tests.helpers.folders import make_tree, tree_hash


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_folder_commands_on_the_local_store(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data, src = tmp_path / "data", tmp_path / "src"
    src.mkdir()
    make_tree(src)
    code, out, _ = run(capsys, data, "folder", "create", str(src), "--json")
    links = json.loads(out)
    assert code == EXIT_OK and links["write"].startswith("mu:folder-w:")
    code, out, _ = run(capsys, data, "folder", "snapshot", str(src))
    assert code == EXIT_OK and out.startswith("snapshot 1: 5 files")
    assert all(text not in out for text in links.values())  # only `create` prints links
    (src / "run.sh").write_bytes(b"#!/bin/sh\necho changed\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(links["write"] + "\n"))
    code, out, _ = run(capsys, data, "folder", "snapshot", str(src), "--link", "-", "--json")
    assert code == EXIT_OK and json.loads(out)["files_read"] == 1
    code, out, _ = run(capsys, data, "folder", "log", links["read"])
    assert code == EXIT_OK and [line.split()[0] for line in out.splitlines()] == ["2", "1"]
    code, out, _ = run(capsys, data, "folder", "diff", links["read"])
    assert code == EXIT_OK and out == "~ run.sh\n"
    code, out, _ = run(capsys, data, "folder", "restore", links["write"], str(tmp_path / "dest"), "--json")
    assert code == EXIT_OK and json.loads(out)["number"] == 2
    assert tree_hash(tmp_path / "dest") == tree_hash(src)
    code, _, err = run(capsys, data, "folder", "restore", links["read"], str(tmp_path / "x"), "--snapshot", "9")
    assert code == EXIT_NOT_FOUND and "no snapshot 9" in err


def test_bad_links_and_unknown_directories_are_usage_errors(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    data, src = tmp_path / "data", tmp_path / "src"
    src.mkdir()
    code, _, err = run(capsys, data, "folder", "snapshot", str(src))
    assert code == EXIT_USAGE and "mu folder create" in err
    code, out, _ = run(capsys, data, "folder", "create", "--json")
    links = json.loads(out)
    code, _, err = run(capsys, data, "folder", "snapshot", str(src), "--link", links["read"])
    assert code == EXIT_USAGE and "write link" in err and links["read"] not in err
    code, _, err = run(capsys, data, "folder", "log", links["verify"])
    assert code == EXIT_USAGE and "verify link" in err
    code, _, err = run(capsys, data, "folder", "log", links["read"][:-2])
    assert code == EXIT_USAGE and "checksum" in err
    with pytest.raises(SystemExit) as exited:
        run(capsys, data, "folder", "restore", links["read"], str(tmp_path / "d"), "--at", "yesterday")
    assert exited.value.code == EXIT_USAGE and "neither ISO 8601 nor Unix seconds" in capsys.readouterr().err


def test_pin_needs_a_link_or_list_and_a_running_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    code, out, _ = run(capsys, data, "folder", "create", "--json")
    verify = json.loads(out)["verify"]
    code, _, err = run(capsys, data, "folder", "pin")
    assert code == EXIT_USAGE and "--list" in err
    code, _, err = run(capsys, data, "folder", "pin", verify, "--list")
    assert code == EXIT_USAGE
    code, _, err = run(capsys, data, "folder", "pin", verify[:-2])
    assert code == EXIT_USAGE and verify[12:] not in err  # the message never repeats the link
    code, _, err = run(capsys, data, "folder", "pin", verify)
    assert code == 1 and "running node" in err and verify not in err
