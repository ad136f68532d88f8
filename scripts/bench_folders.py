"""Folder snapshots against ``tar | sha256sum`` of the same tree, in the same run (issue 16).

Usage::

    scripts/bench-folders [--gib 1] [--files 10000] [--runs 3] [--dir DIR]

Two trees are written under a temp dir (or ``--dir``): ``big`` (``--gib``
GiB of random data in 64 MiB files) and ``small`` (``--files`` files of 4
KiB in 100 directories).  Per run, for each tree, side by side:

- ``tar -cf - TREE | sha256sum``: one read and one hash of every byte;
- the first snapshot into a fresh store and index (every file read,
  chunked, encrypted, hashed and written to the store with fsyncs);
- a second snapshot with nothing changed (the index skips every file;
  only ``lstat`` and the manifest).

Then small edits, measured as the bytes of chunks new to the store (what a
node would upload): 100 bytes inserted in the middle of one 64 MiB file,
1 byte appended to it, one small file rewritten.

Everything runs on the local store (``mu folder snapshot`` without a node):
the network's cost is the upload of those new chunks, measured by the
devnet tests (tests/node/folders/).  The page cache is warm for both sides
(the tree was just written).  Medians of ``--runs`` runs; the machine is
shared, so ratios in one run mean more than absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.folders.index import FolderIndex, Head  # noqa: E402
from node.folders.local import snapshot_folder  # noqa: E402
from node.store import ChunkStore  # noqa: E402
from protocol.folders import WriteCap, encode_record_value  # noqa: E402

MIB = 1 << 20
BIG_FILE = 64 * MIB
SMALL_FILE = 4096
CAP = WriteCap(bytes(range(32)))


def make_big(root: Path, gib: float) -> int:
    root.mkdir(parents=True)
    total = int(gib * 1024 * MIB)
    for i in range(max(1, total // BIG_FILE)):
        with open(root / f"part-{i:03}.bin", "wb") as f:
            for _ in range(BIG_FILE // MIB):
                f.write(os.urandom(MIB))
    return sum(p.stat().st_size for p in root.iterdir())


def make_small(root: Path, files: int) -> int:
    for i in range(files):
        d = root / f"d{i % 100:02}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05}.txt").write_bytes(os.urandom(SMALL_FILE // 2).hex().encode())
    return files * SMALL_FILE


def tar_sha256(root: Path) -> float:
    start = time.perf_counter()
    subprocess.run(f"tar -cf - -C '{root}' . | sha256sum > /dev/null", shell=True, check=True)
    return time.perf_counter() - start


class Folder:
    """A fresh store and index, and the folder's head, as ``mu folder snapshot`` keeps them without a node."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.store = ChunkStore(work / "store")
        self.index = FolderIndex(work / "folders.sqlite3")
        self.head: Head | None = None

    def snapshot(self, tree: Path) -> tuple[float, int, int]:
        """Seconds, files read, bytes of new chunks."""
        before = self.store.used_bytes
        start = time.perf_counter()
        taken, _ = snapshot_folder(self.store, self.index, tree, CAP, self.head, now_ns=time.time_ns(),
                                   tmp_dir=self.work / "tmp")
        seconds = time.perf_counter() - start
        seq = self.head.seq + 1 if self.head else 1
        self.head = Head(seq, encode_record_value(CAP.read_key, taken.link))
        return seconds, taken.files_read, self.store.used_bytes - before

    def close(self) -> None:
        self.store.close()
        self.index.close()


def insert_middle(path: Path, data: bytes) -> None:
    content = path.read_bytes()
    middle = len(content) // 2
    path.write_bytes(content[:middle] + data + content[middle:])


def run_once(base: Path, big: Path, small: Path, run: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, tree in (("big", big), ("small", small)):
        out[f"{name}_tar"] = tar_sha256(tree)
        folder = Folder(base / f"work-{name}-{run}")
        try:
            out[f"{name}_first"], _, _ = folder.snapshot(tree)
            out[f"{name}_again"], read, _ = folder.snapshot(tree)
            assert read == 0, f"an unchanged tree read {read} files"
            if name == "big":
                target = sorted(tree.iterdir())[0]
                insert_middle(target, os.urandom(100))
                _, _, out["insert_bytes"] = folder.snapshot(tree)
                with open(target, "ab") as f:
                    f.write(b"!")
                _, _, out["append_bytes"] = folder.snapshot(tree)
                out["edited_size"] = target.stat().st_size
            else:
                target = sorted(sorted(tree.iterdir())[0].iterdir())[0]
                target.write_bytes(os.urandom(SMALL_FILE // 2).hex().encode())
                _, read, out["small_edit_bytes"] = folder.snapshot(tree)
                assert read == 1
        finally:
            folder.close()
            shutil.rmtree(base / f"work-{name}-{run}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-folders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the big tree in GiB (default 1)")
    parser.add_argument("--files", type=int, default=10_000, help="files in the small tree (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the trees (default: a temp dir)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="mu-bench-folders-", dir=args.dir))
    try:
        big_bytes = make_big(base / "big", args.gib)
        small_bytes = make_small(base / "small", args.files)
        print(f"trees: big {big_bytes / MIB:.0f} MiB in {big_bytes // BIG_FILE} files, "
              f"small {args.files} files of {SMALL_FILE} bytes; {args.runs} runs, medians", flush=True)
        runs = []
        for run in range(args.runs):
            # The edits change the trees: each run starts from a fresh snapshot of the edited tree.
            runs.append(run_once(base, base / "big", base / "small", run))
            print(f"  run {run + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()
                                                   if not k.endswith("bytes") and k != "edited_size"), flush=True)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{big_bytes / MIB / 1024:g} GiB tree: tar|sha256sum {big_bytes / MIB / med['big_tar']:8.1f} MiB/s   "
              f"snapshot {big_bytes / MIB / med['big_first']:8.1f} MiB/s   "
              f"(snapshot takes {med['big_first'] / med['big_tar']:.2f}x tar's time)   "
              f"unchanged rescan {med['big_again']:.3f} s")
        print(f"{args.files} files: tar|sha256sum {args.files / med['small_tar']:8.0f} files/s  "
              f"snapshot {args.files / med['small_first']:8.0f} files/s  "
              f"(snapshot takes {med['small_first'] / med['small_tar']:.2f}x tar's time)   "
              f"unchanged rescan {args.files / med['small_again']:8.0f} files/s "
              f"({med['small_first'] / med['small_again']:.1f}x faster than the first)")
        size = med["edited_size"]
        print("small edits (bytes of new chunks, incl. the changed manifest and snapshot record):")
        print(f"  100 bytes inserted in a {size / MIB:.0f} MiB file: {med['insert_bytes'] / MIB:.2f} MiB "
              f"({med['insert_bytes'] / size:.2%} of the file)")
        print(f"  1 byte appended to it:                {med['append_bytes'] / MIB:.2f} MiB "
              f"({med['append_bytes'] / size:.2%})")
        print(f"  one {SMALL_FILE}-byte file of {args.files} rewritten: {med['small_edit_bytes'] / 1024:.1f} KiB")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
