"""Paths a device may not read (specs/sync.md §8, "Unreadable paths"): unknown, not gone, and never a stop.

The test process runs as root in CI, where permission bits deny nothing,
so the denial is made where the operating system would make it: a listing
of a denied directory (``os.scandir``) and the opening of a denied file
(``store_file``, which opens it) raise the PermissionError the kernel
gives, naming the path.  Everything else is real: files, stores, the
engine's rounds.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from node.sync import ChangeDetector, LocalChange, engine
from node.sync.scan import look
from tests.node.sync.test_engine import Hosts, Network, device, settle, tree_hash
from tests.node.sync.test_service import service


@pytest.fixture
def denied(monkeypatch: pytest.MonkeyPatch) -> set[Path]:
    """Paths this process may not list or open: add to the set to deny, remove to allow again."""
    paths: set[Path] = set()
    real_scandir, real_store_file = os.scandir, engine.store_file

    def scandir(path: Any = ".") -> Any:
        if Path(os.fsdecode(path)) in paths:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_scandir(path)

    def store_file(store: Any, path: Path, chunk_secret: bytes) -> Any:
        if path in paths:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_store_file(store, path, chunk_secret)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(engine, "store_file", store_file)
    return paths


def test_a_file_the_device_cannot_read_waits_and_the_rest_of_the_folder_syncs(tmp_path: Path,
                                                                             denied: set[Path]) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        (a.root / "keep.txt").write_bytes(b"one")
        (a.root / "secret.txt").write_bytes(b"v1")
        await settle(a, b)
        (a.root / "keep.txt").write_bytes(b"one, changed")
        (a.root / "secret.txt").write_bytes(b"v2, locked away")
        (a.root / "locked-new.txt").write_bytes(b"never read yet")
        denied.update({a.root / "secret.txt", a.root / "locked-new.txt"})
        (b.root / "from-b.txt").write_bytes(b"b's")
        await settle(a, b)  # no round fails
        assert (b.root / "keep.txt").read_bytes() == b"one, changed"
        assert (a.root / "from-b.txt").read_bytes() == b"b's", "A still takes remote changes"
        assert (b.root / "secret.txt").read_bytes() == b"v1", "the state keeps what it had"
        assert not (b.root / "locked-new.txt").exists()
        assert sorted(a.unreadable) == ["locked-new.txt", "secret.txt"]
        assert a.unreadable["secret.txt"] == os.strerror(errno.EACCES)
        denied.clear()
        await settle(a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        assert (b.root / "secret.txt").read_bytes() == b"v2, locked away" and a.unreadable == {}

    trio.run(main)


def test_a_file_the_detector_reported_once_is_tried_again_each_round(tmp_path: Path, denied: set[Path]) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        await settle(a, b)
        (a.root / "report.pdf").write_bytes(b"%PDF")
        record = look(a.root, "report.pdf")
        denied.add(a.root / "report.pdf")
        await a.run_round(detected=[LocalChange("report.pdf", record)])
        assert "report.pdf" in a.unreadable and a.state.get("report.pdf") is None
        await a.run_round(detected=[])
        assert "report.pdf" in a.unreadable
        denied.clear()
        await a.run_round(detected=[])  # no event says it again: the round tries it on its own
        assert a.unreadable == {} and a.state.get("report.pdf") is not None
        await settle(b)
        assert (b.root / "report.pdf").read_bytes() == b"%PDF"

    trio.run(main)


def test_a_directory_the_device_cannot_list_is_unknown_not_gone(tmp_path: Path, denied: set[Path]) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        (a.root / "dir/sub").mkdir(parents=True)
        (a.root / "dir/inner.txt").write_bytes(b"inside")
        (a.root / "dir/sub/deep.txt").write_bytes(b"deeper")
        (a.root / "other.txt").write_bytes(b"outside")
        await settle(a, b)
        denied.add(a.root / "dir")
        (a.root / "other.txt").write_bytes(b"outside, changed")
        await settle(a, b)
        assert (b.root / "other.txt").read_bytes() == b"outside, changed"
        assert (b.root / "dir/inner.txt").read_bytes() == b"inside", "not deleted: unknown"
        assert (b.root / "dir/sub/deep.txt").read_bytes() == b"deeper"
        assert set(a.unreadable) == {"dir"}
        denied.clear()
        await settle(a, b)
        assert a.unreadable == {} and tree_hash(a.root) == tree_hash(b.root)

    trio.run(main)


async def test_the_detector_reports_no_delete_under_a_directory_it_cannot_list(tmp_path: Path, denied: set[Path],
                                                                              autojump_clock: trio.abc.Clock) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/inner.txt").write_bytes(b"inside")
    detector = ChangeDetector(tmp_path)
    async with trio.open_nursery() as nursery:
        send, changes = trio.open_memory_channel[tuple[LocalChange, ...]](0)
        await nursery.start(detector.serve, send)
        assert [c.path for c in await changes.receive()] == ["dir", "dir/inner.txt"]
        denied.add(tmp_path / "dir")
        (tmp_path / "dir/late.txt").write_bytes(b"unseen")
        detector.queue.note("dir")
        await detector.wait_rounds(2)
        assert detector.unreadable == {"dir": os.strerror(errno.EACCES)}
        assert "dir/inner.txt" in detector.index
        denied.clear()
        detector.queue.note("dir")
        batch = await changes.receive()
        nursery.cancel_scope.cancel()
    assert [(c.path, c.record is not None) for c in batch] == [("dir/late.txt", True)], "no delete was reported"
    assert detector.unreadable == {}


def test_sync_status_lists_what_the_device_cannot_read(tmp_path: Path, denied: set[Path]) -> None:
    async def main() -> None:
        sync = service(tmp_path)
        sync.hosts = Hosts(sync.records, sync.store)  # type: ignore[assignment]
        folder = tmp_path / "docs"
        (folder / "locked").mkdir(parents=True)
        (folder / "open.txt").write_bytes(b"fine")
        (folder / "closed.txt").write_bytes(b"private")
        denied.update({folder / "locked", folder / "closed.txt"})
        await sync.add({"path": str(folder)})
        await sync._round(sync.folders[str(folder)])
        status = await sync.status({"path": str(folder)})
        assert "error" not in status["last_round"], "the round went on"
        assert status["files"] == 2, "open.txt and the directory locked"
        assert status["unreadable_count"] == 2
        assert status["unreadable"] == [{"path": "closed.txt", "reason": os.strerror(errno.EACCES)},
                                        {"path": "locked", "reason": os.strerror(errno.EACCES)}]

    trio.run(main)


def test_a_version_the_disk_refuses_is_not_claimed_and_the_rest_of_the_plan_is_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refused: set[str] = set()
    real_write = engine.write_file

    attempts: dict[str, int] = {}

    def write_file(root: Path, path: str, *args: Any, **kwargs: Any) -> Any:
        if path in refused:
            attempts[path] = attempts.get(path, 0) + 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / path))
        return real_write(root, path, *args, **kwargs)

    monkeypatch.setattr(engine, "write_file", write_file)

    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        (a.root / "note.txt").write_bytes(b"v1")
        await settle(a, b)
        (a.root / "note.txt").write_bytes(b"v2, longer")
        (a.root / "big.bin").write_bytes(os.urandom(100_000))
        (a.root / "small.txt").write_bytes(b"fits")
        refused.update({"note.txt", "big.bin"})
        await settle(a, b)  # no round fails
        assert (b.root / "small.txt").read_bytes() == b"fits", "the rest of the plan is applied"
        assert (b.root / "note.txt").read_bytes() == b"v1" and not (b.root / "big.bin").exists()
        assert b.unwritable == {"big.bin": os.strerror(errno.ENOSPC), "note.txt": os.strerror(errno.ENOSPC)}
        assert b.state.get("big.bin") is None, "B's record never claims a version it does not have"
        assert (a.root / "big.bin").exists() and (a.root / "note.txt").read_bytes() == b"v2, longer", "A lost nothing"
        refused.clear()
        await settle(a, b)
        assert b.unwritable == {"big.bin": os.strerror(errno.ENOSPC), "note.txt": os.strerror(errno.ENOSPC)}, \
            "not tried again before UNWRITABLE_RETRY_SECONDS"
        assert attempts == {"big.bin": 1, "note.txt": 1}
        monkeypatch.setattr(engine, "UNWRITABLE_RETRY_SECONDS", 0.0)
        await settle(a, b)
        assert b.unwritable == {} and tree_hash(a.root) == tree_hash(b.root)

    trio.run(main)


def test_a_remote_version_never_replaces_or_deletes_a_file_this_device_cannot_read(tmp_path: Path,
                                                                                    denied: set[Path]) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        for name in ("secret.txt", "doomed.txt"):
            (a.root / name).write_bytes(b"v1")
        await settle(a, b)
        (a.root / "secret.txt").write_bytes(b"a's edit, unread")
        (a.root / "doomed.txt").write_bytes(b"a's other edit, unread")
        denied.update({a.root / "secret.txt", a.root / "doomed.txt"})
        (b.root / "secret.txt").write_bytes(b"b's edit")
        (b.root / "doomed.txt").unlink()
        await settle(b, a)
        assert (a.root / "secret.txt").read_bytes() == b"a's edit, unread", "not overwritten"
        assert (a.root / "doomed.txt").read_bytes() == b"a's other edit, unread", "not deleted"
        assert set(a.unwritable) == {"doomed.txt", "secret.txt"}
        denied.clear()
        await settle(a, b, a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        kept = {p.read_bytes() for p in b.root.iterdir()}
        assert {b"a's edit, unread", b"b's edit", b"a's other edit, unread"} <= kept, "every version kept"

    trio.run(main)


def test_nothing_is_applied_under_a_directory_the_detector_could_not_list(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        (a.root / "dir").mkdir()
        (a.root / "dir/inner.txt").write_bytes(b"v1")
        await settle(a, b)
        (a.root / "dir/inner.txt").write_bytes(b"a's edit, never listed")  # the detector could not see it
        (b.root / "dir/inner.txt").write_bytes(b"b's edit")
        (b.root / "dir/new.txt").write_bytes(b"new from b")
        await settle(b)
        reason = os.strerror(errno.EACCES)
        for _ in range(2):
            await a.run_round(detected=[], unreadable={"dir": reason})
        assert (a.root / "dir/inner.txt").read_bytes() == b"a's edit, never listed"
        assert not (a.root / "dir/new.txt").exists()
        assert a.unreadable == {"dir": reason} and set(a.unwritable) == {"dir/inner.txt", "dir/new.txt"}
        await a.run_round(detected=[], unreadable={})  # listed again: the next full look finds the edit
        await settle(a, b, a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        kept = {p.read_bytes() for p in (b.root / "dir").iterdir()}
        assert {b"a's edit, never listed", b"b's edit", b"new from b"} <= kept

    trio.run(main)
