"""Retention applied over months of snapshots with injected times (specs/folders.md §9 Retention policy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.cli import EXIT_NOT_FOUND, EXIT_OK, main
from node.folders.index import FolderIndex, Head
from node.folders.local import folder_diff, folder_log, folder_restore, snapshot_folder
from node.folders.retention import chunks_to_keep, prune, prune_after_snapshot
from node.store import STORE_DIR, ChunkStore
from protocol.chunks import RawWalker
from protocol.folders import KEEP_ALL_DAYS, KEEP_DAILY_DAYS, WriteCap, encode_record_value
from protocol.folders._history import NS_PER_DAY

pytestmark = pytest.mark.slow  # about 160 snapshots, each with fsyncs

CAP = WriteCap(bytes(range(1, 33)))
HOUR = NS_PER_DAY // 24
START = 20_000 * NS_PER_DAY  # a UTC midnight in 2024
DAYS = 200  # past KEEP_DAILY_DAYS: some snapshots fall out of both bands
EVERY = 5  # days between two days with snapshots


def chunks_of(store: ChunkStore, root: bytes) -> set[bytes]:
    walker, out = RawWalker(root), set()
    while (address := walker.next_address()) is not None:
        walker.feed(store.get(address))
        out.add(address)
    return out


class History:
    """A folder snapshotted twice a day every EVERY days for DAYS days, into ``data_dir``'s store and index."""

    def __init__(self, data_dir: Path, src: Path) -> None:
        data_dir.mkdir()
        src.mkdir()
        self.store = ChunkStore(data_dir / STORE_DIR)
        self.index = FolderIndex.open(data_dir)
        self.tmp = data_dir / "folders-tmp"
        self.src = src
        self.head: Head | None = None
        self.closed = False
        self.times: dict[int, int] = {}
        self.links: dict[int, bytes] = {}  # snapshot number -> root of the file "v" it holds
        (src / "stable").write_bytes(b"the same in every snapshot")

    def snapshot(self, time_ns: int, *, apply: bool = True) -> None:
        number = len(self.times) + 1
        (self.src / "v").write_bytes(f"version {number} ".encode() * 50)
        taken, _ = snapshot_folder(self.store, self.index, self.src, CAP, self.head, now_ns=time_ns, tmp_dir=self.tmp)
        for link in [e.link for e in taken.entries if e.path == b"v"]:
            assert link is not None
            self.links[number] = link.root
        links = [e.link for e in taken.entries if e.link is not None] + [taken.snapshot.manifest, taken.link]
        for link in links:  # as the node's upload records what it sent
            for address in chunks_of(self.store, link.root):
                self.index.record_chunk_sent(address)
            self.index.record_root_sent(link.root)
        self.head = Head(number, encode_record_value(CAP.read_key, taken.link))
        self.index.record_head(CAP.public_key, self.head)
        self.times[number] = time_ns
        if apply:
            prune(self.store, self.index, CAP, self.head)

    def _all_chunks(self) -> set[bytes]:
        return set(self.store.list())

    def run_months(self, *, apply: bool = True) -> None:
        for day in range(0, DAYS, EVERY):
            for hour in (1, 13):
                self.snapshot(START + day * NS_PER_DAY + hour * HOUR, apply=apply)

    def expected_kept(self) -> set[int]:
        """The policy worked out by hand: all of the last 30 days, the later one of each day to 183, the newest."""
        now = self.times[max(self.times)]
        kept = {max(self.times)}
        for number, t in self.times.items():
            age = now - t
            if age < KEEP_ALL_DAYS * NS_PER_DAY or (age < KEEP_DAILY_DAYS * NS_PER_DAY and t % NS_PER_DAY == 13 * HOUR):
                kept.add(number)
        return kept

    def close(self) -> None:
        if not self.closed:
            self.store.close()
            self.index.close()
        self.closed = True


def _built(tmp: Path, *, apply: bool):  # type: ignore[no-untyped-def]
    h = History(tmp / "data", tmp / "src")
    h.run_months(apply=apply)
    yield h
    h.close()


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The history with the policy applied after every snapshot (as both backends do)."""
    yield from _built(tmp_path_factory.mktemp("applied"), apply=True)


@pytest.fixture(scope="module")
def unapplied(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The same history taken by a mu that did not prune."""
    yield from _built(tmp_path_factory.mktemp("unapplied"), apply=False)


def test_months_of_snapshots_keep_what_the_policy_says(tmp_path: Path, months: History) -> None:
    kept = months.expected_kept()
    now = months.times[max(months.times)]
    ages = [(now - months.times[n]) // NS_PER_DAY for n in kept]
    assert min(ages) == 0 and any(KEEP_ALL_DAYS <= a < KEEP_DAILY_DAYS for a in ages)  # both bands have members
    assert len(set(months.times) - kept) > 10
    log = folder_log(months.store, CAP.read_cap, months.head)
    assert [e.number for e in log] == sorted(kept, reverse=True)
    # Each line's changes are against the kept snapshot before it, not a pruned one.
    assert all(e.changed == 1 and e.added == 0 for e in log[:-1])
    d = folder_diff(months.store, CAP.read_cap, months.head, None, None)
    assert (d.b, d.a) == (log[0].number, log[1].number)
    pruned = min(set(months.times) - kept)
    with pytest.raises(LookupError, match="pruned"):
        folder_restore(months.store, CAP.read_cap, months.head, tmp_path / "x", number=pruned)
    oldest = min(kept)
    done = folder_restore(months.store, CAP.read_cap, months.head, tmp_path / "old", number=oldest)
    assert done.number == oldest
    assert (tmp_path / "old" / "v").read_bytes() == f"version {oldest} ".encode() * 50
    # --at a pruned snapshot's time gives the newest kept one taken before it.
    at = folder_restore(months.store, CAP.read_cap, months.head, tmp_path / "at", at_ns=months.times[oldest + 1])
    assert at.number == oldest


def test_chunks_only_pruned_snapshots_need_are_released(months: History) -> None:
    kept = months.expected_kept()
    keep = chunks_to_keep(months.store, CAP.read_cap, months.head)
    stable = chunks_of(months.store, next(e.link.root for e in _entries(months) if e.path == b"stable"))
    assert stable <= keep
    for number, root in months.links.items():
        chunks = chunks_of(months.store, root)
        if number in kept:
            assert chunks <= keep and all(months.index.chunk_sent(a) for a in chunks)
        else:  # no longer paid for: a later snapshot holding it again uploads it again
            assert not chunks & keep and not any(months.index.chunk_sent(a) for a in chunks)
            assert not months.index.root_sent(root)
    assert all(months.index.chunk_sent(a) for a in stable)
    again = prune(months.store, months.index, CAP, months.head)
    assert (again.newly_pruned, again.chunks_released) == (0, 0)
    assert again.kept == len(kept) and again.pruned == len(months.times) - len(kept)


def _entries(months: History):  # type: ignore[no-untyped-def]
    from node.folders.history import load_manifest, load_snapshot
    from protocol.folders import decode_record_value
    assert months.head is not None
    return load_manifest(months.store, load_snapshot(months.store, decode_record_value(CAP.read_key,
                                                                                       months.head.value)))


def test_prune_applies_a_policy_not_applied_yet_and_dry_run_changes_nothing(
        tmp_path: Path, unapplied: History, capsys: pytest.CaptureFixture[str]) -> None:
    months = unapplied
    kept = months.expected_kept()
    pruned = len(months.times) - len(kept)
    dry = prune(months.store, months.index, CAP, months.head, dry_run=True)
    assert dry.dry_run and dry.newly_pruned == pruned and dry.chunks_released > 0
    assert not months.index.pruned(CAP.public_key) and all(months.index.chunk_sent(a) for a in months._all_chunks())
    months.close()  # the commands open the data dir themselves
    data = months.src.parent / "data"
    write, read = CAP.to_string(), CAP.read_cap.to_string()

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--data-dir", str(data), "folder", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("prune", write, "--dry-run")
    assert code == EXIT_OK and out.startswith(f"{len(kept)} snapshots kept, {pruned} pruned ({pruned} now)")
    assert f"would release {dry.chunks_released} chunks ({dry.bytes_released} bytes)" in out
    code, out, _ = run("prune", write, "--json")
    assert code == EXIT_OK and json.loads(out)["newly_pruned"] == pruned
    assert json.loads(out)["chunks_released"] == dry.chunks_released
    code, out, _ = run("prune", write)
    assert code == EXIT_OK and f"{pruned} pruned (0 now); released 0 chunks" in out
    code, out, _ = run("log", read)
    lines = out.splitlines()
    assert code == EXIT_OK and [int(line.split()[0]) for line in lines[:-1]] == sorted(kept, reverse=True)
    assert lines[-1].startswith(f"{pruned} older snapshots pruned")
    code, out, _ = run("log", read, "--json")
    assert json.loads(out)["pruned"] == pruned
    code, _, err = run("restore", read, str(tmp_path / "x"), "--snapshot", "1")
    assert code == EXIT_NOT_FOUND and "pruned" in err


def test_after_a_snapshot_a_missing_kept_chunk_releases_nothing(tmp_path: Path) -> None:
    h = History(tmp_path / "data", tmp_path / "src")
    try:
        h.snapshot(START, apply=False)
        h.snapshot(START + 200 * NS_PER_DAY, apply=False)  # snapshot 1 is now past KEEP_DAILY_DAYS
        assert h.head is not None
        h.store.delete(h.links[2])  # a chunk of the kept snapshot's file is gone from the store
        assert prune_after_snapshot(h.store, h.index, CAP, h.head) is None
        assert not h.index.pruned(CAP.public_key)
        assert all(h.index.chunk_sent(a) for a in chunks_of(h.store, h.links[1]))
    finally:
        h.close()
