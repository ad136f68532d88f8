"""Folder sync between two devices on a devnet, beside ``cp -r`` of the same tree (issue 17).

Usage::

    scripts/bench-sync [--files 10000] [--mib 1024] [--changes 5] [--nodes 5] [--dir DIR]

scripts/devnet starts ``mu chain`` and ``--nodes`` paid nodes.  Node 2 syncs
directory A (``mu sync add``), node 3 joins with the write link into B.  Per
tree, side by side in the same run:

- ``cp -r`` of the tree to a fresh directory (one read, one write of every byte);
- the initial sync: from ``mu sync add --link`` on B until B's tree equals
  A's (A chunks, encrypts, uploads to R hosts with paid PUTs and publishes;
  B resolves, fetches with paid GETs and writes);

first ``--files`` files of 4 KiB in 100 directories (files/s), then one file
of ``--mib`` MiB (MiB/s).  Then ``--changes`` times a small file is written
on A and the seconds until B holds it are printed (median; the devices poll
every 2 s, specs/sync.md §15).  The machine is shared: ratios in one run mean
more than absolute numbers.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
SMALL_BYTES = 4096
POLL = 0.05
TREE_POLL = 0.5


def mu(data_dir: str, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "node", "--data-dir", data_dir, *args, "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def same(a: Path, b: Path) -> bool:
    """Same relative paths and same file contents (sizes first: cheap while B is still behind)."""
    def listing(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    la, lb = listing(a), listing(b)
    return la == lb and all(filecmp.cmp(a / p, b / p, shallow=False) for p in la)


def wait_same(a: Path, b: Path, limit: float) -> float:
    """Seconds until ``b``'s tree equals ``a``'s, looked at every ``TREE_POLL`` s.

    Listing 10,000 files takes a good part of a core here, and the nodes
    measured need both cores: a finer poll would slow what it times.
    """
    start = time.monotonic()
    while not same(a, b):
        if time.monotonic() - start > limit:
            raise SystemExit(f"{b} did not catch up with {a} within {limit} s")
        time.sleep(TREE_POLL)
    return time.monotonic() - start


def wait_file(path: Path, data: bytes, limit: float) -> float:
    """Seconds until ``path`` holds ``data`` (one small file, looked at every ``POLL`` s)."""
    start = time.monotonic()
    while not (path.exists() and path.read_bytes() == data):
        if time.monotonic() - start > limit:
            raise SystemExit(f"{path} did not appear within {limit} s")
        time.sleep(POLL)
    return time.monotonic() - start


def make_small(tree: Path, count: int) -> None:
    for i in range(count):
        directory = tree / f"d{i % 100:02}"
        directory.mkdir(exist_ok=True)
        (directory / f"f{i:05}").write_bytes(os.urandom(SMALL_BYTES))


def make_big(tree: Path, mib: int) -> None:
    with open(tree / "big.bin", "wb") as f:
        for _ in range(0, mib, 64):
            f.write(os.urandom(min(64, mib) * MIB))
        f.truncate(mib * MIB)


def cp_seconds(tree: Path, work: Path) -> float:
    target = work / f"cp-{tree.name}"
    start = time.monotonic()
    subprocess.run(["cp", "-r", str(tree), str(target)], check=True)
    seconds = time.monotonic() - start
    shutil.rmtree(target)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mu-bench-sync-", dir=args.dir))
    devnet = subprocess.Popen([sys.executable, "scripts/devnet.py", "--nodes", str(args.nodes), "--dir",
                               str(work / "net"), "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert devnet.stdout is not None
        nodes = json.loads(devnet.stdout.readline())["nodes"]
        node_a, node_b = nodes[1]["data_dir"], nodes[2]["data_dir"]
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        for name, unit, amount in (("small", "files/s", args.files), ("big", "MiB/s", args.mib)):
            a, b = work / f"a-{name}", work / f"b-{name}"
            a.mkdir()
            b.mkdir()
            if name == "small":
                make_small(a, args.files)
            else:
                make_big(a, args.mib)
            cp = cp_seconds(a, work)
            start = time.monotonic()
            link = mu(node_a, "sync", "add", str(a))["write_link"]
            mu(node_b, "sync", "add", str(b), "--link", link)
            wait_same(a, b, 3600.0)
            seconds = time.monotonic() - start
            print(f"{name} ({amount} {unit.split('/')[0]}): mu sync {amount / seconds:9.1f} {unit} ({seconds:.1f} s)"
                  f"   cp -r {amount / cp:9.1f} {unit} ({cp:.2f} s)   sync takes {seconds / cp:.0f}x cp's time  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
        latencies = []
        for i in range(args.changes):
            data = os.urandom(100)
            (work / "a-small" / f"change-{i}.txt").write_bytes(data)
            latencies.append(wait_file(work / "b-small" / f"change-{i}.txt", data, 120.0))
        wait_same(work / "a-small", work / "b-small", 120.0)
        print(f"change on A -> file on B: median {statistics.median(latencies):.2f} s "
              f"(min {min(latencies):.2f}, max {max(latencies):.2f}, {len(latencies)} changes)", flush=True)
    finally:
        devnet.send_signal(signal.SIGTERM)
        devnet.wait(timeout=300)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
