"""Applying remote changes to real files: temp + fsync + rename, and a racing local edit kept as a conflict copy."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.sync import (
    IgnoreFileError,
    IgnoreRules,
    delete_path,
    look,
    make_directory,
    move_path,
    set_metadata,
    write_file,
    write_symlink,
)
from protocol.sync import EntryKind, conflict_name

DEVICE = bytes([5]) * 32
MTIME = 1_767_225_600_000_000_000


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_remote_version_replaces_what_the_plan_saw(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    applied = write_file(tmp_path, "f", [b"new ", b"content"], expected=look(tmp_path, "f"), mode=0o600,
                         mtime_ns=MTIME, device=DEVICE)
    assert applied.kept_as is None and _files(tmp_path) == {"f": b"new content"}
    assert applied.record == look(tmp_path, "f")
    assert applied.record is not None and applied.record.mode == 0o600 and applied.record.mtime_ns == MTIME


def test_a_local_edit_that_raced_the_update_becomes_a_conflict_copy(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_bytes(b"base")
    seen = look(tmp_path, "doc.txt")
    (tmp_path / "doc.txt").write_bytes(b"local edit after the plan")  # the race
    os.utime(tmp_path / "doc.txt", ns=(MTIME, MTIME))
    applied = write_file(tmp_path, "doc.txt", [b"remote"], expected=seen, mode=0o644, mtime_ns=MTIME + 1,
                         device=DEVICE)
    copy = conflict_name("doc.txt", MTIME, DEVICE)
    assert applied.kept_as == copy
    assert _files(tmp_path) == {"doc.txt": b"remote", copy: b"local edit after the plan"}


def test_a_file_created_locally_where_the_plan_saw_nothing_is_kept(tmp_path: Path) -> None:
    (tmp_path / "new").write_bytes(b"mine")
    applied = write_file(tmp_path, "new", [b"theirs"], expected=None, mode=0o644, mtime_ns=MTIME, device=DEVICE)
    assert applied.kept_as is not None and _files(tmp_path)[applied.kept_as] == b"mine"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")

    def broken() -> Iterator[bytes]:
        yield b"half"
        raise ConnectionError("the host went away")

    with pytest.raises(ConnectionError):
        write_file(tmp_path, "f", broken(), expected=look(tmp_path, "f"), mode=0o644, mtime_ns=MTIME, device=DEVICE)
    assert _files(tmp_path) == {"f": b"old"}
    assert os.listdir(tmp_path) == ["f"]


def test_a_delete_keeps_a_version_it_did_not_see(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"seen")
    seen = look(tmp_path, "f")
    assert seen is not None
    (tmp_path / "f").write_bytes(b"edited since")
    assert delete_path(tmp_path, "f", expected=seen) is None
    assert _files(tmp_path) == {"f": b"edited since"}
    now = look(tmp_path, "f")
    assert now is not None and delete_path(tmp_path, "f", expected=now) is not None
    assert _files(tmp_path) == {}


def test_a_directory_is_deleted_only_when_empty(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "child").write_bytes(b"x")
    seen = look(tmp_path, "d")
    assert seen is not None and delete_path(tmp_path, "d", expected=seen) is None
    (tmp_path / "d" / "child").unlink()
    assert delete_path(tmp_path, "d", expected=seen) is not None and not (tmp_path / "d").exists()


def test_a_move_renames_without_refetching_unless_the_source_changed(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"content")
    seen = look(tmp_path, "a")
    assert seen is not None
    moved = move_path(tmp_path, "a", "sub/b", expected_source=seen, expected_target=None, device=DEVICE)
    assert moved is not None and _files(tmp_path) == {"sub/b": b"content"}
    (tmp_path / "c").write_bytes(b"one")
    seen = look(tmp_path, "c")
    assert seen is not None
    (tmp_path / "c").write_bytes(b"two!")
    assert move_path(tmp_path, "c", "d", expected_source=seen, expected_target=None, device=DEVICE) is None
    assert (tmp_path / "c").read_bytes() == b"two!"


def test_symlinks_directories_and_metadata(tmp_path: Path) -> None:
    link = write_symlink(tmp_path, "l", "target/elsewhere", expected=None, device=DEVICE)
    assert link.record is not None and link.record.kind is EntryKind.SYMLINK
    assert os.readlink(tmp_path / "l") == "target/elsewhere"
    made = make_directory(tmp_path, "x/y", mode=0o700, expected=None, device=DEVICE)
    assert made.record is not None and made.record.kind is EntryKind.DIRECTORY and made.record.mode == 0o700
    (tmp_path / "f").write_bytes(b"1")
    seen = look(tmp_path, "f")
    assert seen is not None
    changed = set_metadata(tmp_path, "f", expected=seen, mode=0o600, mtime_ns=MTIME)
    assert changed is not None and changed.record is not None and changed.record.mode == 0o600
    assert set_metadata(tmp_path, "f", expected=seen, mode=0o644, mtime_ns=MTIME) is None, "changed since"
    before = os.lstat(tmp_path / "x").st_mtime_ns
    seen = look(tmp_path, "x")
    assert seen is not None and seen.mtime_ns == 0, "a directory's record keeps no mtime"
    changed = set_metadata(tmp_path, "x", expected=seen, mode=0o711, mtime_ns=seen.mtime_ns)
    assert changed is not None and changed.record is not None and changed.record.mode == 0o711
    assert os.lstat(tmp_path / "x").st_mtime_ns == before, "a directory's mtime is not synced: never dated 1970"


def test_nothing_is_applied_through_a_symlink_and_a_symlink_target_never_gets_a_mode_or_mtime(tmp_path: Path) -> None:
    root, outside = tmp_path / "folder", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    os.chmod(outside / "victim", 0o600)
    os.utime(outside / "victim", ns=(MTIME, MTIME))
    before = os.stat(outside / "victim")
    os.symlink(outside, root / "away")  # a synced symlink to a directory out of the folder
    os.symlink(outside / "victim", root / "file-link")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    # A write, directory, delete or move whose way goes through the symlink is not done.
    assert write_file(root, "away/evil", [b"x"], expected=None, mode=0o644, mtime_ns=MTIME, device=DEVICE) is None
    assert write_symlink(root, "away/evil-link", "/", expected=None, device=DEVICE) is None
    assert make_directory(root, "away/sub", mode=0o777, expected=None, device=DEVICE) is None
    victim = look(root, "away/victim")
    assert victim is not None and delete_path(root, "away/victim", expected=victim) is None
    (root / "mine").write_bytes(b"mine")
    mine = look(root, "mine")
    assert mine is not None
    assert move_path(root, "mine", "away/mine", expected_source=mine, expected_target=None, device=DEVICE) is None
    assert write_file(root, "loop-a/x", [b"x"], expected=None, mode=0o644, mtime_ns=MTIME, device=DEVICE) is None
    assert look(root, "loop-a/x") is None  # a way through a symlink loop leads nowhere
    # A symlink's metadata is its own: its target keeps its mode and mtime; a loop is no error.
    for name in ("file-link", "away", "loop-a"):
        seen = look(root, name)
        assert seen is not None and seen.kind is EntryKind.SYMLINK
        done = set_metadata(root, name, expected=seen, mode=0o777, mtime_ns=MTIME + 1)
        assert done is not None and done.record is not None and done.record.mtime_ns == MTIME + 1
    after = os.stat(outside / "victim")
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and (outside / "victim").read_bytes() == b"keep me"
    assert (root / "mine").read_bytes() == b"mine"
    # A directory where the plan saw nothing but a symlink to one is: the link is set aside, not followed.
    outside_mode = os.stat(outside).st_mode
    made = make_directory(root, "away", mode=0o777, expected=None, device=DEVICE)
    assert made is not None and made.kept_as is not None and os.readlink(root / made.kept_as) == str(outside)
    assert (root / "away").is_dir() and not (root / "away").is_symlink() and os.stat(outside).st_mode == outside_mode


def test_a_version_of_another_kind_replaces_what_the_plan_saw_and_keeps_what_it_did_not(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()  # a directory the remote made a file
    seen = look(tmp_path, "d")
    applied = write_file(tmp_path, "d", [b"now a file"], expected=seen, mode=0o644, mtime_ns=MTIME, device=DEVICE)
    assert applied is not None and applied.kept_as is None and (tmp_path / "d").read_bytes() == b"now a file"
    (tmp_path / "e").mkdir()  # ... and one that got a file the plan did not see: kept as a conflict copy
    seen = look(tmp_path, "e")
    (tmp_path / "e" / "new").write_bytes(b"local")
    applied = write_symlink(tmp_path, "e", "elsewhere", expected=seen, device=DEVICE)
    assert applied is not None and applied.kept_as is not None and os.readlink(tmp_path / "e") == "elsewhere"
    assert (tmp_path / applied.kept_as / "new").read_bytes() == b"local"
    dated = os.lstat(tmp_path / applied.kept_as).st_mtime_ns
    assert applied.kept_as == conflict_name("e", dated, DEVICE), "named with the directory's mtime on disk, not 1970"
    (tmp_path / "f").write_bytes(b"file")  # a file the remote made a directory
    seen = look(tmp_path, "f")
    made = make_directory(tmp_path, "f", mode=0o750, expected=seen, device=DEVICE)
    assert made is not None and made.kept_as is None and made.record is not None
    assert made.record.kind is EntryKind.DIRECTORY and made.record.mode == 0o750
    (tmp_path / "g").write_bytes(b"old")  # ... and one edited since the plan saw it: kept
    seen = look(tmp_path, "g")
    (tmp_path / "g").write_bytes(b"edited locally")
    made = make_directory(tmp_path, "g", mode=0o755, expected=seen, device=DEVICE)
    assert made is not None and made.kept_as is not None and (tmp_path / "g").is_dir()
    assert (tmp_path / made.kept_as).read_bytes() == b"edited locally"


def test_a_broken_muignore_is_reported(tmp_path: Path) -> None:
    (tmp_path / ".muignore").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(IgnoreFileError, match="not UTF-8"):
        IgnoreRules.load(tmp_path)
    (tmp_path / ".muignore").write_text("/top\n*.tmp\n!important.tmp\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.ignores("top") and not rules.ignores("a/top") and rules.ignores("a/b.tmp")
    assert not rules.ignores("important.tmp") and rules.ignores(".muignore") and rules.ignores("d/.mu-tmp-x")
