"""Devices syncing one folder through records and hosts only (specs/sync.md §14 Devices).

Each device has its own real directory and chunk store; the "network" is a
dictionary of signed mutable records (verified as a DHT node verifies them)
and one shared dictionary of chunks standing for the hosts.  No device ever
talks to another: everything goes through records and hosts, as between two
devices that are never online together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from node.folders.snapshot import store_bytes
from node.store import ChunkStore
from node.sync import LocalChange, engine, look
from node.sync.engine import FolderSync
from protocol.chunks import Link, RawWalker
from protocol.folders import ReadCap, WriteCap
from protocol.kademlia import MutableRecord, sign_mutable
from protocol.sync import DeviceRecord

def tree_hash(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """What sync carries (specs/sync.md §8): path -> mode, file mtime, contents; a directory's mtime is not synced."""
    found = {}
    for path in sorted(root.rglob("*")):
        try:
            st = os.lstat(path)
            is_file = path.is_file() and not path.is_symlink()
            found[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns if is_file else 0,
                                                  path.read_bytes() if is_file else b"")
        except (FileNotFoundError, NotADirectoryError):
            # Gone while we looked (a node's sync is applying a change to this tree): marked so that
            # it matches no real entry, and a caller comparing trees sees them differ and looks again.
            found[str(path.relative_to(root))] = (-1, 0, b"")
    return found


CAP = WriteCap(bytes([9]) * 32)
CLOCK = iter(range(10**18, 2 * 10**18, 10**9))


class Network:
    """Records kept as a DHT node keeps them (valid signature, highest seq) and chunks kept as hosts keep them."""

    def __init__(self) -> None:
        self.records: dict[bytes, MutableRecord] = {}
        self.chunks: dict[bytes, bytes] = {}
        self.puts = 0

    async def resolve_record(self, public_key: bytes) -> MutableRecord | None:
        return self.records.get(public_key)

    async def publish_record(self, record: MutableRecord) -> int:
        assert record.verify()
        current = self.records.get(record.public_key)
        if current is None or record.seq > current.seq:
            self.records[record.public_key] = record
        return 1


class Hosts:
    def __init__(self, network: Network, store: ChunkStore) -> None:
        self.network, self.store = network, store

    async def upload(self, links: Sequence[Link], *, announce: bytes) -> None:
        assert announce in {link.root for link in links}
        for link in links:
            walker = RawWalker(link.root)
            while (address := walker.next_address()) is not None:
                data = self.store.get(address)
                if address not in self.network.chunks:
                    self.network.chunks[address] = data
                    self.network.puts += 1
                walker.feed(data)

    async def ensure(self, links: Sequence[Link], *, near: Sequence[bytes]) -> None:
        for link in links:
            walker = RawWalker(link.root)
            while (address := walker.next_address()) is not None:
                data = self.network.chunks[address]
                self.store.put(address, data)
                walker.feed(data)


def device(tmp_path: Path, network: Network, name: str, cap: WriteCap | ReadCap = CAP) -> FolderSync:
    root = tmp_path / name
    root.mkdir()
    store = ChunkStore(tmp_path / f"{name}-store")
    return FolderSync(root, cap, os.urandom(32), store, network, Hosts(network, store), tmp_path / f"{name}-tmp",
                      wall_clock=lambda: next(CLOCK))


async def settle(*devices: FolderSync) -> None:
    for _ in range(3):
        for d in devices:
            await d.run_round()


def test_create_modify_delete_rename_mkdir_rmdir_chmod_reach_the_other_device_and_back(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        (a.root / "docs").mkdir()
        (a.root / "docs/note.txt").write_bytes(b"hello")
        (a.root / "big.bin").write_bytes(os.urandom(300_000))
        (a.root / "empty").mkdir()
        await settle(a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        assert (b.root / "docs/note.txt").read_bytes() == b"hello"
        (a.root / "docs/note.txt").write_bytes(b"hello again")
        os.rename(a.root / "big.bin", a.root / "docs/big.bin")
        (a.root / "empty").rmdir()
        os.chmod(a.root / "docs/note.txt", 0o600)
        await settle(a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        assert not (b.root / "empty").exists() and (b.root / "docs/big.bin").exists()
        assert (b.root / "docs/note.txt").stat().st_mode & 0o777 == 0o600
        (b.root / "docs/note.txt").unlink()
        (b.root / "from-b").write_bytes(b"b was here")
        await settle(b, a)
        assert tree_hash(a.root) == tree_hash(b.root)
        assert not (a.root / "docs/note.txt").exists() and (a.root / "from-b").read_bytes() == b"b was here"

    trio.run(main)


def test_symlinks_sync_as_links_and_never_touch_what_they_point_at(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        outside = tmp_path / "outside.txt"  # not in the folder: sync must never change it
        outside.write_bytes(b"not synced")
        os.chmod(outside, 0o600)
        os.utime(outside, ns=(10**18, 10**18))
        (a.root / "target.txt").write_bytes(b"target")
        os.chmod(a.root / "target.txt", 0o640)
        os.symlink("target.txt", a.root / "link.txt")
        os.symlink(outside, a.root / "out")
        os.symlink("loop2", a.root / "loop1")
        os.symlink("loop1", a.root / "loop2")
        await settle(a, b)  # a round that fails (a symlink loop) fails the test
        assert tree_hash(a.root) == tree_hash(b.root)
        assert os.readlink(b.root / "out") == str(outside) and os.readlink(b.root / "loop1") == "loop2"
        for root in (a.root, b.root):
            assert os.stat(root / "target.txt").st_mode & 0o777 == 0o640
        st = os.stat(outside)
        assert (st.st_mode & 0o777, st.st_mtime_ns) == (0o600, 10**18)

    trio.run(main)


def test_a_path_that_changes_kind_reaches_the_other_device_both_ways(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        (a.root / "x").write_bytes(b"a file")
        (a.root / "d").mkdir()
        (a.root / "d/f").write_bytes(b"in d")
        await settle(a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        (a.root / "x").unlink()  # a file becomes a directory, a directory a file
        (a.root / "x").mkdir()
        (a.root / "x/f").write_bytes(b"x is a directory now")
        (a.root / "d/f").unlink()
        (a.root / "d").rmdir()
        (a.root / "d").write_bytes(b"d is a file now")
        await settle(a, b)  # a round that fails (rename over a directory) fails the test
        assert tree_hash(a.root) == tree_hash(b.root)
        assert (b.root / "x/f").read_bytes() == b"x is a directory now" and (b.root / "d").read_bytes() == b"d is a file now"
        os.unlink(b.root / "d")  # and back, from the other device
        (b.root / "d").mkdir()
        os.symlink("d", b.root / "x.tmp")
        (b.root / "x/f").unlink()
        (b.root / "x").rmdir()
        os.rename(b.root / "x.tmp", b.root / "x")
        await settle(b, a)
        assert tree_hash(a.root) == tree_hash(b.root)
        assert (a.root / "d").is_dir() and os.readlink(a.root / "x") == "d"
        assert not any(".sync-conflict" in p.name for p in a.root.rglob("*"))

    trio.run(main)


def test_a_device_catches_up_from_records_and_hosts_alone(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a = device(tmp_path, net, "a")
        (a.root / "f").write_bytes(b"one")
        await a.run_round()
        (a.root / "f").write_bytes(b"two")
        (a.root / "g").write_bytes(b"three")
        await a.run_round()
        del a  # A is gone for good; B joins later with the link only
        b = device(tmp_path, net, "b")
        report = await b.run_round()
        assert (b.root / "f").read_bytes() == b"two" and (b.root / "g").read_bytes() == b"three"
        assert len(report.devices) == 1 and not report.conflicts

    trio.run(main)


def test_many_new_files_are_published_in_parts_and_an_unread_file_is_never_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "ROUND_FILES", 3)

    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        for i in range(7):
            (a.root / f"f{i}").write_bytes(b"from a %d" % i)
        for name in ("b0", "b1", "b2", "f6"):  # B's own, one more than a round reads
            (b.root / name).write_bytes(b"b's own " + name.encode())
        report = await a.run_round()
        assert report.published_seq == 1 and len(a.state.live()) == 3  # the first part, published
        await b.run_round()
        assert not (b.root / "f0").exists()  # B still reads its own: it merges nothing yet
        await settle(a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        contents = {p.read_bytes() for p in a.root.iterdir()}
        own = {b"b's own " + name for name in (b"b0", b"b1", b"b2", b"f6")}
        assert contents == {b"from a %d" % i for i in range(7)} | own
        assert any(".sync-conflict-" in p.name for p in a.root.iterdir())  # f6: both versions kept

    trio.run(main)


def test_concurrent_edits_keep_both_versions_and_trees_agree(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        (a.root / "doc.txt").write_bytes(b"base")
        await settle(a, b)
        (a.root / "doc.txt").write_bytes(b"edit on a")
        (b.root / "doc.txt").write_bytes(b"edit on b, longer")
        await a.run_round()  # each publishes before seeing the other's edit
        await b.run_round()
        await settle(a, b)
        assert tree_hash(a.root) == tree_hash(b.root)
        contents = {p.read_bytes() for p in a.root.iterdir()}
        assert contents == {b"edit on a", b"edit on b, longer"}
        assert any(".sync-conflict-" in p.name for p in a.root.iterdir())

    trio.run(main)


def test_a_read_only_device_applies_never_reaches_the_writers_and_its_forged_record_is_refused(
        tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a = device(tmp_path, net, "a")
        ro = device(tmp_path, net, "ro", CAP.read_cap)
        (a.root / "f").write_bytes(b"from a")
        await settle(a, ro)
        assert (ro.root / "f").read_bytes() == b"from a"
        (ro.root / "local-only").write_bytes(b"kept here")
        report = await ro.run_round()
        assert report.published_seq is None and ro.device not in net.records
        # The best a read-only device can do: publish a record with a certificate it made up,
        # and get itself named (by a notify, or a roster it cannot sign) to the writers.
        state = store_bytes(ro.store, ro.state.serialize(), CAP.read_cap.chunk_secret, tmp_path / "ro-tmp")
        await ro.hosts.upload([state.link], announce=state.link.root)
        forged = DeviceRecord(CAP.public_key, bytes(64), state.link).encode(CAP.read_key, ro.device)
        await net.publish_record(sign_mutable(ro.device_seed, 1, forged))
        report = await a.run_round(also=[ro.device])
        assert report.refused and "bad certificate" in report.refused[0]
        assert not (a.root / "local-only").exists()
        assert (ro.root / "local-only").read_bytes() == b"kept here"

    trio.run(main)


@pytest.mark.slow
def test_a_one_byte_edit_in_a_64_mib_file_uploads_at_most_two_new_data_chunks(tmp_path: Path) -> None:
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        data = bytearray(os.urandom(64 * 1024 * 1024))
        (a.root / "big").write_bytes(data)
        await settle(a, b)
        data[40_000_000] ^= 1
        (a.root / "big").write_bytes(data)
        before = net.puts
        await a.run_round()
        await b.run_round()
        assert (b.root / "big").read_bytes() == data
        # New chunks: at most 2 data chunks, the file's tree chunk(s), the state blob's.
        assert net.puts - before <= 2 + 2 + 2, net.puts - before

    trio.run(main)


def test_a_restless_file_is_taken_as_the_round_reads_it_unless_it_changes_during_the_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The detector reports a file that never settles with its last look's record, marked restless
    # (specs/sync.md §8): by the time the round reads it, it has grown again.
    async def main() -> None:
        net = Network()
        a, b = device(tmp_path, net, "a"), device(tmp_path, net, "b")
        await a.run_round()
        log_file = a.root / "app.log"
        log_file.write_bytes(b"line 1\n")
        looked = look(a.root, "app.log")
        log_file.write_bytes(b"line 1\nline 2\n")
        # Any other file that changed since the detector looked is still being written: not taken.
        report = await a.run_round(detected=[LocalChange("app.log", looked)])
        assert report.retry == ("app.log",) and "app.log" not in a.state.live()
        report = await a.run_round(detected=[LocalChange("app.log", looked, restless=True)])
        assert report.retry == () and report.local_changes == 1
        assert a.state.live()["app.log"].size == len(b"line 1\nline 2\n")
        await settle(b)
        assert (b.root / "app.log").read_bytes() == b"line 1\nline 2\n"

        real_store_file = engine.store_file

        def store_then_append(store: ChunkStore, path: Path, chunk_secret: bytes) -> object:
            stored = real_store_file(store, path, chunk_secret)
            with path.open("ab") as out:  # written while the round read it
                out.write(b"line 4\n")
            return stored

        monkeypatch.setattr(engine, "store_file", store_then_append)
        looked = look(a.root, "app.log")
        with log_file.open("ab") as out:
            out.write(b"line 3\n")
        report = await a.run_round(detected=[LocalChange("app.log", looked, restless=True)])
        assert report.retry == ("app.log",) and report.local_changes == 0
        assert a.state.live()["app.log"].size == len(b"line 1\nline 2\n"), "never a read torn by a write"

    trio.run(main)
