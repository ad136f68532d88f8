"""Files benchmark (README "Benchmark"): ``bash scripts/bench [--quick]``.

Measures, in one run on this machine:

* the limit: SHA-256 + AES-256-GCM over the same bytes, in one process, in
  1 MiB messages (what adding a file must at least do);
* the disk: writing the same bytes as 1 MiB files with fdatasync + rename
  (what durably storing them must at least do);
* the cut: FastCDC over the same bytes, in one process (specs/chunks.md §5.2);
* ``mu add`` and ``mu get`` of a 256 MiB file (16 MiB with ``--quick``), each
  timed inside a fresh worker process (interpreter start-up excluded, printed
  apart), medians of ``--runs``.  Unlike the limit, add and get use several
  threads (node/files/local.py: sealing / opening threads, a writer, the store's
  fsync threads), so on a multi-core machine they can exceed a ratio of 1;
  the disk figure is printed beside them because durably writing the bytes
  is the other bound; ``mu add`` cuts content-defined chunks (format 3, the
  default) and, side by side in the same run, fixed 1 MiB chunks (format 2,
  ``--chunk-size 1048576``);
* peak RSS of add and get workers for 64 MiB and 1 GiB files (4 and 32 MiB
  with ``--quick``).

It prints MiB/s, the ratios to the limit and to min(limit, disk), and RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[1]


def make_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their SHA-256 hex."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
        # On disk before anything is timed: its writeback must not land
        # inside a measurement.
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def settle() -> None:
    """Flush every dirty page and pending journal work (deletes, discards)
    of earlier steps, so each timed step starts from a quiet disk."""
    os.sync()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def load_blocks(path: Path) -> list[bytes]:
    """The file's bytes as 1 MiB blocks in memory (the limit reads no disk)."""
    blocks = []
    with open(path, "rb") as f:
        while block := f.read(MiB):
            blocks.append(block)
    return blocks


def crypto_limit(blocks: list[bytes]) -> float:
    """MiB/s of AES-256-GCM (fresh key and nonce per 1 MiB message) then SHA-256 of the result."""
    from Crypto.Cipher import AES

    out = bytearray(MiB + 16)
    start = time.perf_counter()
    for i, block in enumerate(blocks):
        cipher = AES.new(hashlib.sha256(i.to_bytes(8, "big")).digest(), AES.MODE_GCM, nonce=bytes(12))
        n = len(block)
        cipher.encrypt(block, output=memoryview(out)[:n])
        out[n:n + 16] = cipher.digest()
        hashlib.sha256(memoryview(out)[:n + 16]).digest()
    return sum(map(len, blocks)) / MiB / (time.perf_counter() - start)


def disk_limit(work: Path, path: Path, size: int) -> float:
    """MiB/s of writing the file's bytes as 1 MiB files, each fdatasync'ed and renamed."""
    target = work / "disk-ref"
    target.mkdir()
    buf = bytearray(MiB)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        i = 0
        while n := f.readinto(buf):
            tmp = target / f"{i}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, memoryview(buf)[:n])
            os.fdatasync(fd)
            os.close(fd)
            os.rename(tmp, target / str(i))
            i += 1
    dir_fd = os.open(target, os.O_RDONLY)
    os.fsync(dir_fd)
    os.close(dir_fd)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    return size / MiB / elapsed


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM).

    Not getrusage's ru_maxrss: Linux carries the parent's high-water mark
    across fork/vfork + exec, so a child of this (big) benchmark process
    would report the parent's memory, not its own.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(argv: list[str]) -> int:
    """Child process: run one add or get, print seconds and peak RSS as JSON."""
    sys.path.insert(0, str(REPO))
    from node.files.local import add_file, get_file
    from node.store import ChunkStore
    from protocol.chunks import Link

    action, store_dir = argv[0], Path(argv[1])
    with ChunkStore(store_dir) as store:
        start = time.perf_counter()
        if action == "add":
            result = {"link": str(add_file(store, Path(argv[2])).link)}
        elif action == "add-fixed":
            result = {"link": str(add_file(store, Path(argv[2]), chunk_size=MiB).link)}
        elif action == "get":
            get_file(store, Link.parse(argv[2]), Path(argv[3]))
            result = {}
        else:
            result = {}
        result["seconds"] = time.perf_counter() - start
    result["maxrss_mib"] = peak_rss_mib()
    print(json.dumps(result))
    return 0


def run_worker(*args: str | Path) -> tuple[dict[str, object], float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"worker failed: {proc.stderr}")
    return json.loads(proc.stdout), wall


def cut_rate(blocks: list[bytes]) -> float:
    """MiB/s of the FastCDC cut alone over ``blocks`` fed in order (one thread)."""
    from protocol.chunks import Chunker

    chunker = Chunker()
    start = time.perf_counter()
    for block in blocks:
        chunker.feed(block)
    chunker.finish()
    return sum(map(len, blocks)) / MiB / (time.perf_counter() - start)


def add_get(work: Path, src: Path, expect: str, tag: str,
            action: str = "add") -> tuple[dict[str, object], dict[str, object], float, float]:
    store = work / f"store-{tag}"
    out = work / f"out-{tag}.bin"
    added, add_wall = run_worker(action, store, src)
    settle()
    got, get_wall = run_worker("get", store, added["link"], out)
    if file_sha256(out) != expect:
        raise SystemExit("round trip mismatch: the file read back differs")
    shutil.rmtree(store)
    out.unlink()
    return added, got, add_wall, get_wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, for tests)")
    parser.add_argument("--dir", default=None, help="where to put files and stores (default: the system temp dir)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 3, 1 with --quick)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    sys.path.insert(0, str(REPO))
    import node.files.local as mu_files
    import node.store as mu_store
    size = (16 if args.quick else 256) * MiB
    rss_sizes = (4 * MiB, 32 * MiB) if args.quick else (64 * MiB, 1024 * MiB)
    runs = args.runs or (1 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="mu-bench-", dir=args.dir))
    figures: dict[str, object] = {"size_mib": size // MiB, "dir": str(work)}
    try:
        src = work / "input.bin"
        expect = make_file(src, size)
        blocks = load_blocks(src)
        # The machine is shared and its speed drifts, so every run measures
        # the limit and the disk right before mu's add and get, and the
        # ratios are taken per run before the median.
        rows = []
        walls = []
        for i in range(runs):
            settle()
            limit = crypto_limit(blocks)
            settle()
            disk = disk_limit(work, src, size)
            cut = cut_rate(blocks)
            settle()
            added, got, add_wall, get_wall = add_get(work, src, expect, f"run{i}")
            add_rate = size / MiB / added["seconds"]  # type: ignore[operator]
            get_rate = size / MiB / got["seconds"]  # type: ignore[operator]
            settle()
            fixed, _, _, _ = add_get(work, src, expect, f"fixed{i}", "add-fixed")
            fixed_rate = size / MiB / fixed["seconds"]  # type: ignore[operator]
            rows.append((limit, disk, add_rate, get_rate, cut, fixed_rate))
            walls.append((add_wall, get_wall))
        del blocks
        med = statistics.median
        limit, disk = med(r[0] for r in rows), med(r[1] for r in rows)
        add_rate, get_rate = med(r[2] for r in rows), med(r[3] for r in rows)
        add_ratio, get_ratio = med(r[2] / r[0] for r in rows), med(r[3] / r[0] for r in rows)
        add_bound = med(r[2] / min(r[0], r[1]) for r in rows)
        get_bound = med(r[3] / min(r[0], r[1]) for r in rows)
        print(f"mu files benchmark: {size // MiB} MiB random file in {work} (medians of {runs} runs)")
        print(f"  limit: SHA-256 + AES-256-GCM in-process  {limit:8.0f} MiB/s  (one thread)")
        print(f"  disk:  write + fdatasync 1 MiB files     {disk:8.0f} MiB/s  (one at a time)")
        cut, fixed_rate = med(r[4] for r in rows), med(r[5] for r in rows)
        print(f"  cut:   FastCDC alone (specs/chunks.md §5.2) {cut:5.0f} MiB/s  (one thread)")
        print(f"  mu add                                   {add_rate:8.0f} MiB/s  {add_ratio:.2f}x limit  {add_bound:.2f}x min(limit, disk)")
        print(f"  mu add --chunk-size 1048576 (format 2)   {fixed_rate:8.0f} MiB/s  "
              f"content-defined / fixed: {med(r[2] / r[5] for r in rows):.2f}x")
        print(f"  mu get                                   {get_rate:8.0f} MiB/s  {get_ratio:.2f}x limit  {get_bound:.2f}x min(limit, disk)")
        print(f"  (worker wall time incl. interpreter start: add {med(w[0] for w in walls):.2f} s, get {med(w[1] for w in walls):.2f} s)")
        print(f"  mu add and get are multi-threaded: add seals on {mu_files.SEAL_THREADS} threads and writes chunk files on up "
              f"to {mu_store.FSYNC_PARALLELISM};\n  get opens on {mu_files.OPEN_THREADS} threads plus a writer and a sync thread "
              f"({os.cpu_count()} CPUs here). The limit and disk references are single-threaded.")
        figures.update(limit_mib_s=limit, disk_mib_s=disk, add_mib_s=add_rate, get_mib_s=get_rate,
                       cut_mib_s=cut, add_fixed_mib_s=fixed_rate,
                       add_ratio=add_ratio, get_ratio=get_ratio, add_ratio_bound=add_bound, get_ratio_bound=get_bound,
                       runs=[dict(zip(("limit", "disk", "add", "get", "cut", "add_fixed"), r)) for r in rows])
        src.unlink()
        print("  peak RSS of the worker process:")
        for rss_size in rss_sizes:
            path = work / f"rss-{rss_size}.bin"
            digest = make_file(path, rss_size)
            added, got, _, _ = add_get(work, path, digest, f"rss{rss_size}")
            path.unlink()
            label = f"{rss_size // MiB} MiB"
            print(f"    {label:>9}: add {added['maxrss_mib']:6.1f} MiB   get {got['maxrss_mib']:6.1f} MiB")
            figures[f"rss_add_{rss_size // MiB}mib"] = added["maxrss_mib"]
            figures[f"rss_get_{rss_size // MiB}mib"] = got["maxrss_mib"]
        if args.json:
            print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
