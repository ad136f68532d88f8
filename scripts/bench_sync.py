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
POLL = 0.05


def mu(data_dir: str, *args: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-m", "node", "--data-dir", data_dir, *args, "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def same(a: Path, b: Path) -> bool:
    """Same relative paths and same file contents (sizes first: cheap while B is still behind)."""
    def listing(root: Path) -> dict[str, int]:
        return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}
    la, lb = listing(a), listing(b)
    return la == lb and all((a / p).read_bytes() == (b / p).read_bytes() for p in la)


def wait_same(a: Path, b: Path, limit: float) -> float:
    start = time.monotonic()
    while not same(a, b):
        if time.monotonic() - start > limit:
            raise SystemExit(f"{b} did not catch up with {a} within {limit} s")
        time.sleep(POLL)
    return time.monotonic() - start


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
        for name, make, unit, amount in (
                ("small", lambda t: [(t / f"d{i % 100:02}").mkdir(exist_ok=True) or
                                     (t / f"d{i % 100:02}" / f"f{i:05}").write_bytes(os.urandom(4096))
                                     for i in range(args.files)], "files/s", args.files),
                ("big", lambda t: (t / "big.bin").write_bytes(os.urandom(args.mib * MIB)), "MiB/s", args.mib)):
            a, b = work / f"a-{name}", work / f"b-{name}"
            a.mkdir()
            b.mkdir()
            make(a)
            cp = cp_seconds(a, work)
            start = time.monotonic()
            link = mu(node_a, "sync", "add", str(a))["write_link"]
            mu(node_b, "sync", "add", str(b), "--link", link)
            wait_same(a, b, 3600.0)
            seconds = time.monotonic() - start
            print(f"{name}: mu sync {amount / seconds:10.1f} {unit} ({seconds:.1f} s)   "
                  f"cp -r {amount / cp:10.1f} {unit} ({cp:.2f} s)   cp/sync {seconds / cp:.0f}x", flush=True)
        latencies = []
        for i in range(args.changes):
            (work / "a-small" / f"change-{i}.txt").write_bytes(os.urandom(100))
            latencies.append(wait_same(work / "a-small", work / "b-small", 120.0))
        print(f"change on A -> file on B: median {statistics.median(latencies):.2f} s "
              f"(min {min(latencies):.2f}, max {max(latencies):.2f}, {len(latencies)} changes)")
    finally:
        devnet.send_signal(signal.SIGTERM)
        devnet.wait(timeout=300)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
