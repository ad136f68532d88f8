"""The node's sync service: folders kept across restarts, and a failing round never stops the node."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio

from node.api.control import ControlError
from node.store import ChunkStore
from node.sync.service import FOLDERS_FILE, SYNC_DIR, SyncService, describe_failure
from protocol.chunks import Link
from protocol.kademlia import ErrorCode, RemoteProtocolError
from tests.node.sync.test_engine import Network


class RefusingHosts:
    async def upload(self, links: Sequence[Link], *, announce: bytes) -> None:
        raise RemoteProtocolError(ErrorCode.OVER_LIMIT, "127.0.0.1 already announced 256 records")

    async def ensure(self, links: Sequence[Link], *, near: Sequence[bytes]) -> None:
        raise AssertionError("nothing to fetch")


def service(tmp_path: Path) -> SyncService:
    dialer: Any = SimpleNamespace(dht=Network())
    return SyncService(tmp_path / "data", ChunkStore(tmp_path / "store"), dialer)


def test_a_round_that_fails_is_reported_and_the_service_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        sync = service(tmp_path)
        sync.hosts = RefusingHosts()  # type: ignore[assignment]
        folder = tmp_path / "docs"
        folder.mkdir()
        (folder / "a.txt").write_bytes(b"x")
        reply = await sync.add({"path": str(folder)})
        assert reply["write_link"].startswith("mu:folder-w:") and reply["read_only"] is False
        await sync._round(sync.folders[str(folder)])
        status = await sync.status({"path": str(folder)})
        assert "over_limit" in status["last_round"]["error"]
        try:
            await sync.add({"path": str(folder)})
        except ControlError as exc:
            assert exc.status == 409
        else:
            raise AssertionError("a directory was added twice")

    trio.run(main)


def test_folders_and_pause_survive_a_restart_and_remove_keeps_the_files(tmp_path: Path) -> None:
    async def main() -> None:
        folder = tmp_path / "docs"
        folder.mkdir()
        (folder / "a.txt").write_bytes(b"x")
        first = service(tmp_path)
        link = (await first.add({"path": str(folder)}))["read_link"]
        await first._set_paused({"path": str(folder)}, paused=True)
        assert ((tmp_path / "data" / SYNC_DIR / FOLDERS_FILE).stat().st_mode & 0o777) == 0o600
        second = service(tmp_path)
        await trio.to_thread.run_sync(second._load)
        kept = second.folders[str(folder)]
        assert kept.paused and kept.link != link and kept.link.startswith("mu:folder-w:")
        await second.remove({"path": str(folder)})
        assert (folder / "a.txt").read_bytes() == b"x" and not second.folders

    trio.run(main)


def test_leftover_temporary_files_are_removed_when_the_folder_is_opened(tmp_path: Path) -> None:
    async def main() -> None:
        folder = tmp_path / "docs"
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / ".mu-tmp-abc").write_bytes(b"half a file")
        (folder / "kept.txt").write_bytes(b"x")
        sync = service(tmp_path)
        await sync.add({"path": str(folder)})
        sync._engine(sync.folders[str(folder)])
        assert sorted(p.name for p in folder.rglob("*")) == ["kept.txt", "sub"]

    trio.run(main)


def test_a_folder_overlapping_the_data_dir_or_another_synced_folder_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        sync = service(tmp_path)  # data dir: tmp_path / "data"
        docs, beside = tmp_path / "docs", tmp_path / "beside"
        for directory in (docs / "sub", beside, tmp_path / "data" / "inside"):
            directory.mkdir(parents=True)
        (tmp_path / "via-link").symlink_to(docs)
        await sync.add({"path": str(docs)})
        for path, other in ((docs / "sub", "docs"), (tmp_path, "data dir"), (tmp_path / "via-link", "docs"),
                            (tmp_path / "data", "data dir"), (tmp_path / "data" / "inside", "data dir")):
            try:
                await sync.add({"path": str(path)})
            except ControlError as exc:
                assert exc.status == 409 and exc.code == "overlaps" and other in exc.message, (path, exc.message)
            else:
                raise AssertionError(f"{path} was synced")
        assert (await sync.add({"path": str(beside)}))["path"] == str(beside)
        assert sorted(sync.folders) == [str(beside), str(docs)]

    trio.run(main)


def test_a_failed_round_names_what_failed_inside_its_task_groups(tmp_path: Path) -> None:
    full = OSError(28, "No space left on device")
    nested = ExceptionGroup("Exceptions from Trio nursery (2 sub-exceptions)", [
        ExceptionGroup("Exceptions from Trio nursery (1 sub-exception)", [full]), OSError(28, "No space left on device"),
        KeyError("x")])
    assert describe_failure(nested) == "OSError: [Errno 28] No space left on device; KeyError: 'x'"
    many = ExceptionGroup("many", [ValueError(str(i)) for i in range(5)])
    assert describe_failure(many) == "ValueError: 0; ValueError: 1; ValueError: 2 (and 2 more)"

    async def main() -> None:
        sync = service(tmp_path)
        folder = tmp_path / "docs"
        folder.mkdir()
        await sync.add({"path": str(folder)})
        assert (await sync.status({"path": str(folder)}))["pending_up"] == 1, "nothing is known before a round"

        class FullDisk:
            async def upload(self, links: Sequence[Link], *, announce: bytes) -> None:
                async with trio.open_nursery() as nursery:
                    async def put() -> None:
                        raise full
                    nursery.start_soon(put)

        sync.hosts = FullDisk()  # type: ignore[assignment]
        (folder / "a.txt").write_bytes(b"x")
        await sync._round(sync.folders[str(folder)])
        status = await sync.status({"path": str(folder)})
        assert status["last_round"]["error"] == "OSError: [Errno 28] No space left on device"
        assert status["pending_up"] >= 1

    trio.run(main)
