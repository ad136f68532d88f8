"""A round's files go to and come from hosts together: one placement view, one provider record (issue 17).

Real DHT nodes on UDP and real transports on loopback (tests/helpers/network.py);
specs/sync.md §15 The sync service, specs/network.md §3 Placement.
"""

from __future__ import annotations

import os
from pathlib import Path

from node.folders.snapshot import store_file
from node.store import ChunkStore
from node.sync.service import PARALLEL_FILES, NodeHosts
from protocol.chunks import Link, RawWalker
from protocol.fetch import DEFAULT_REPLICAS
from tests.helpers.network import network

SECRET = bytes(range(32))
FILES = 2 * PARALLEL_FILES + 3


def addresses(store: ChunkStore, link: Link) -> list[bytes]:
    walker, out = RawWalker(link.root), []
    while (address := walker.next_address()) is not None:
        out.append(address)
        walker.feed(store.get(address))
    return out


async def test_many_files_take_one_view_one_announcement_and_arrive_whole(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(FILES):
        (folder / f"f{i}").write_bytes(os.urandom(1000 + i))
    (folder / "copy").write_bytes((folder / "f0").read_bytes())  # the same content: sent once
    async with network(tmp_path, 6) as nodes:
        device_a, device_b = nodes[0], nodes[5]
        links = [store_file(device_a.store, path, SECRET).link for path in sorted(folder.iterdir())]
        state = links[-1]  # stands for the state naming the files
        announced: list[bytes] = []
        announce_provider = device_a.dht.announce_provider

        async def counted(key: bytes, **kwargs: object):  # type: ignore[no-untyped-def]
            announced.append(key)
            return await announce_provider(key, **kwargs)

        monkeypatch.setattr(device_a.dht, "announce_provider", counted)
        dialer_a = device_a.dialer()
        await NodeHosts(device_a.store, dialer_a, None).upload(links, announce=state.root)
        assert dialer_a.lookups == 1 and len(announced) == 1  # not one lookup and one record per file
        for link in links:
            for address in addresses(device_a.store, link):
                assert sum(n.store.has(address) for n in nodes[1:]) >= DEFAULT_REPLICAS

        fresh = ChunkStore(tmp_path / "fresh")  # device B holds none of the files
        dialer_b = device_b.dialer()
        await NodeHosts(fresh, dialer_b, None).ensure(links, near=[state.root])
        assert dialer_b.lookups == 2  # one view and the state's providers, for every file
        for link in links:
            assert [fresh.get(a) for a in addresses(device_a.store, link)] == \
                   [device_a.store.get(a) for a in addresses(device_a.store, link)]
        before = dialer_b.lookups
        await NodeHosts(fresh, dialer_b, None).ensure(links, near=[state.root])
        assert dialer_b.lookups == before  # everything here: nothing looked up, nothing fetched
