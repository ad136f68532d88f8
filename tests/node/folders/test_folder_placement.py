"""A folder restore through a node takes one placement view, a snapshot upload one provider record.

In-process nodes: real DHT on UDP and real transports on loopback
(tests/helpers/network.py).  specs/network.md §3 Placement, specs/folders.md §10 step 4, §11.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.folders.network import FolderService
from protocol.folders import WriteCap
from tests.helpers.folders import tree_hash
from tests.helpers.network import network

FILES = 24


async def _quiet(event: dict[str, object]) -> None:
    """The stream's progress events are not what this test looks at."""


async def test_restore_of_many_files_makes_two_lookups_and_a_snapshot_one_announce(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(FILES):
        (src / ("sub" if i % 2 else "") / f"f{i}").write_bytes(os.urandom(1000 + i))
    cap = WriteCap(os.urandom(32))
    async with network(tmp_path, 5) as nodes:
        writer, reader = nodes[0], nodes[4]
        announced: list[bytes] = []
        announce = writer.dht.announce_provider

        async def counting_announce(key: bytes, **kwargs: object):  # type: ignore[no-untyped-def]
            announced.append(key)
            return await announce(key, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(writer.dht, "announce_provider", counting_announce)
        up = writer.dialer()
        service = FolderService(writer.data_dir, writer.store, up)
        report = await service.snapshot({"link": cap.to_string(), "path": str(src), "replicas": 2}, _quiet)
        assert report["files"] == FILES and report["under_replicated"] == 0
        assert len(announced) == 1  # the snapshot record's root, not one per file
        assert up.lookups == 1  # one placement view for every file, manifest and record

        down = reader.dialer()
        restorer = FolderService(reader.data_dir, reader.store, down)
        dest = tmp_path / "dest"
        done = await restorer.restore({"link": cap.read_cap.to_string(), "output": str(dest)}, _quiet)
        assert done["files"] == FILES and tree_hash(dest) == tree_hash(src)
        assert down.lookups == 2  # the view around the snapshot and its providers, for all files
