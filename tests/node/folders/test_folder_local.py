"""Snapshots and restores on the local store: byte-identical trees, skipped unchanged files, history."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from node.files.local import get_file
from node.folders.index import FolderIndex, Head
from node.folders.local import folder_diff, folder_log, folder_restore, snapshot_folder, unsent_history
from node.folders.snapshot import FolderError
from node.store import ChunkStore
from protocol.folders import WriteCap, encode_record_value
from tests.helpers.folders import make_tree, tree_hash

CAP = WriteCap(bytes(range(32)))


class Folder:
    """One data dir (store + index) and its folder's head, as the local backend keeps them."""

    def __init__(self, tmp: Path) -> None:
        self.store = ChunkStore(tmp / "store")
        self.index = FolderIndex(tmp / "folders.sqlite3")
        self.tmp = tmp / "folders-tmp"
        self.head: Head | None = None

    def snapshot(self, directory: Path, now_ns: int | None = None):  # type: ignore[no-untyped-def]
        taken, changes = snapshot_folder(self.store, self.index, directory, CAP, self.head,
                                         now_ns=now_ns or time.time_ns(), tmp_dir=self.tmp)
        self.head = Head((self.head.seq + 1) if self.head else 1, encode_record_value(CAP.read_key, taken.link))
        return taken, changes

    def close(self) -> None:
        self.store.close()
        self.index.close()


@pytest.fixture
def folder(tmp_path: Path):  # type: ignore[no-untyped-def]
    f = Folder(tmp_path)
    yield f
    f.close()


def test_restore_gives_a_byte_identical_tree(tmp_path: Path, folder: Folder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    taken, changes = folder.snapshot(src)
    assert taken.snapshot.number == 1 and len(changes.added) == len(taken.entries)
    dest = tmp_path / "dest"
    report = folder_restore(folder.store, CAP.read_cap, folder.head, dest)
    assert report.files == 5 and report.symlinks == 2 and report.dirs == 4
    assert tree_hash(dest) == tree_hash(src)
    again = folder_restore(folder.store, CAP.read_cap, folder.head, dest)
    assert again.already == 5 and again.files == 0 and tree_hash(dest) == tree_hash(src)
    assert not list(tmp_path.joinpath("folders-tmp").iterdir())  # no plaintext left beside the store


def test_unchanged_files_are_not_read_again(tmp_path: Path, folder: Folder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i:03}").write_bytes(b"x%d" % i * 100)
        os.utime(src / f"f{i:03}", ns=(10**18, 10**18))
    first, _ = folder.snapshot(src)
    assert first.files_read == 50
    (src / "f007").write_bytes(b"changed")
    second, changes = folder.snapshot(src)
    assert second.files_read == 1 and changes.changed == (b"f007",) and not changes.added
    # The one file's chunks plus the new manifest's and snapshot record's: a data and a root chunk each.
    assert second.new_chunks == 6


def test_history_log_diff_and_choice_by_number_and_time(tmp_path: Path, folder: Folder) -> None:
    # Both snapshots within KEEP_ALL_DAYS of each other, so the retention policy keeps both.
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"one")
    folder.snapshot(src, now_ns=10**18)
    (src / "a").write_bytes(b"two")
    (src / "b").write_bytes(b"new")
    folder.snapshot(src, now_ns=10**18 + 3600 * 10**9)
    log = folder_log(folder.store, CAP.read_cap, folder.head)
    assert [(e.number, e.files, e.added, e.changed) for e in log] == [(2, 2, 1, 1), (1, 1, 1, 0)]
    d = folder_diff(folder.store, CAP.read_cap, folder.head, None, None)
    assert (d.a, d.b, d.added, d.changed, d.removed) == (1, 2, ("b",), ("a",), ())
    old = folder_restore(folder.store, CAP.read_cap, folder.head, tmp_path / "old", number=1)
    assert old.number == 1 and (tmp_path / "old" / "a").read_bytes() == b"one"
    at = folder_restore(folder.store, CAP.read_cap, folder.head, tmp_path / "at", at_ns=10**18 + 5)
    assert at.number == 1 and not (tmp_path / "at" / "b").exists()
    with pytest.raises(LookupError):
        folder_restore(folder.store, CAP.read_cap, folder.head, tmp_path / "x", number=3)


def test_restore_of_a_sub_path_and_a_missing_one(tmp_path: Path, folder: Folder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    folder.snapshot(src)
    folder_restore(folder.store, CAP.read_cap, folder.head, tmp_path / "part", sub=b"docs/deep")
    assert sorted(p.name for p in (tmp_path / "part").rglob("*")) == ["data.bin", "deep", "docs", "empty"]
    with pytest.raises(FolderError, match="no path"):
        folder_restore(folder.store, CAP.read_cap, folder.head, tmp_path / "none", sub=b"nope")


def test_leftover_temp_files_are_removed_and_never_final(tmp_path: Path, folder: Folder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"content")
    folder.snapshot(src)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".f.mu-restore-deadbeef").write_bytes(b"half")
    (dest / ".f.mu-partial-0123abcd").write_bytes(b"half")
    (dest / ".f.mu-restore-0123abcd.mu-part").write_bytes(b"half")  # a fetch into a temp name, killed
    folder_restore(folder.store, CAP.read_cap, folder.head, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["f"]


def test_files_are_written_by_the_given_writer_and_equal_ones_copied(tmp_path: Path, folder: Folder) -> None:
    """Through a node, a restore fetches each file straight into place (``write``); a file with the same
    content as one already written in this run is copied from it, not fetched again."""
    src = tmp_path / "src"
    src.mkdir()
    same = os.urandom(100_000)
    (src / "a").write_bytes(same)
    (src / "b").write_bytes(same)
    (src / "c").write_bytes(b"other")
    (src / "d").write_bytes(same)
    os.chmod(src / "a", 0o400)  # a read-only file is still a source to copy from
    folder.snapshot(src)
    written: list[str] = []

    def write(link, path):  # type: ignore[no-untyped-def]
        written.append(path.name)
        get_file(folder.store, link, path)

    dest = tmp_path / "dest"
    report = folder_restore(folder.store, CAP.read_cap, folder.head, dest, write=write)
    assert report.files == 4
    assert sorted(name.split(".mu-restore-")[0] for name in written) == [".a", ".c"]  # b and d copied from a
    assert tree_hash(dest) == tree_hash(src)
    (dest / "a").unlink()
    (dest / "b").unlink()
    again = folder_restore(folder.store, CAP.read_cap, folder.head, dest, write=write)
    assert again.files == 2 and again.already == 2 and written[2:] == [written[2]]  # b copied from the new a


def test_snapshots_taken_without_a_node_are_sent_with_the_next_one(tmp_path: Path, folder: Folder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"one")
    first, _ = folder.snapshot(src)
    (src / "b").write_bytes(b"two")
    second, _ = folder.snapshot(src)
    # Nothing sent yet: both records, both manifests and every file link, oldest first.
    pending = unsent_history(folder.store, folder.index, second.link)
    assert pending[-1] == second.link and pending.index(first.link) < pending.index(second.snapshot.manifest)
    assert len(pending) == 2 + 2 + 1 + 2  # a; manifest 1, record 1; a, b; manifest 2, record 2
    folder.index.record_root_sent(first.link.root)
    assert unsent_history(folder.store, folder.index, second.link) == pending[3:]
    assert unsent_history(folder.store, folder.index, None) == []


def test_small_files_are_fetched_together_and_a_failure_stops_the_rest(tmp_path: Path, folder: Folder) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(1000 + i))
    folder.snapshot(src)
    together = threading.Barrier(2)

    def write(link, path):  # type: ignore[no-untyped-def]
        together.wait(timeout=30)  # two fetches under way at once, or the barrier breaks
        get_file(folder.store, link, path)

    dest = tmp_path / "dest"
    report = folder_restore(folder.store, CAP.read_cap, folder.head, dest, write=write)
    assert report.files == 6 and tree_hash(dest) == tree_hash(src)

    calls: list[str] = []
    lock = threading.Lock()

    def broken(link, path):  # type: ignore[no-untyped-def]
        with lock:
            calls.append(path.name)
            if len(calls) == 1:
                path.write_bytes(b"half")
                raise OSError(5, "Input/output error")
        get_file(folder.store, link, path)

    again = tmp_path / "again"
    with pytest.raises(OSError, match="Input/output error"):
        folder_restore(folder.store, CAP.read_cap, folder.head, again, write=broken)
    names = sorted(p.name for p in again.iterdir())
    assert all(not name.startswith(".") for name in names)  # no temp file left, nothing half under a name
    assert all((again / name).read_bytes() == (src / name).read_bytes() for name in names)
    assert len(names) < 6


def test_a_killed_fetch_is_resumed_from_its_part_file_and_stale_ones_go(tmp_path: Path, folder: Folder) -> None:
    """Through a node a file is fetched into a temp name fixed by its content, via ``NAME.mu-part``: a rerun
    after a kill finds that part file again (a fetch resumes from it); a successful run leaves none."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(5000))
    (src / "b").write_bytes(os.urandom(7000))
    folder.snapshot(src)
    dest = tmp_path / "dest"

    def killed(link, path):  # type: ignore[no-untyped-def]
        if path.name.startswith(".b."):
            path.with_name(path.name + ".mu-part").write_bytes(b"half of b")
            raise OSError(5, "Input/output error")
        get_file(folder.store, link, path)

    with pytest.raises(OSError):
        folder_restore(folder.store, CAP.read_cap, folder.head, dest, write=killed)
    (part,) = dest.glob(".b.mu-restore-*.mu-part")
    stale = dest / ".gone.mu-restore-0123456789abcdef.mu-part"  # a file no longer in the snapshot
    stale.write_bytes(b"old")
    seen: list[bool] = []

    def resumed(link, path):  # type: ignore[no-untyped-def]
        seen.append(path.with_name(path.name + ".mu-part") == part and part.read_bytes() == b"half of b")
        part.unlink()  # a fetch resumes from it, then renames it
        get_file(folder.store, link, path)

    again = folder_restore(folder.store, CAP.read_cap, folder.head, dest, write=resumed)
    assert again.files == 1 and again.already == 1 and seen == [True]
    assert tree_hash(dest) == tree_hash(src)
    assert sorted(p.name for p in dest.iterdir()) == ["a", "b"]  # the stale part file is gone too
