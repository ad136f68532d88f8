"""Benchmark: mu against libtorrent and Tahoe-LAFS, the same file in the same sitting (issue 22).

Usage::

    scripts/bench-vs-bittorrent [--size MIB] [--runs N] [--dir DIR]

One random file of ``--size`` MiB (default 256).  Each of ``--runs`` runs
(default 3) measures, one after the other on this machine:

- libtorrent (the ``libtorrent`` wheel): one seeder to one downloader on
  loopback, from ``add_torrent`` to finished (scripts/bench_libtorrent.py);
- Tahoe-LAFS (the ``tahoe-lafs`` wheel): a fresh local grid, ``tahoe put``
  and ``tahoe get`` of the file (scripts/bench_tahoe.py);
- mu on a fresh devnet: ``mu add`` with 3 replicas with every node up and
  with one replica candidate stopped, then a paid ``mu get`` by a node that
  holds none of the file from 3 hosts and from 1 host
  (scripts/bench_mu_devnet.py).

libtorrent and Tahoe run from the benchmark's own venv (``MU_BENCH_VENV``,
set up by scripts/bench-vs-bittorrent), never the project's.  It prints
each run, the medians, the ratios issue 22's must-hold lines name (each
the median of the per-run ratios, every ratio's two sides measured in the
same run) and the machine's load at the start and the end.  Beside each
MiB/s it prints the CPU seconds of every process doing that work and MiB
per CPU second: on a shared machine the load moves wall-clock rates (and
libtorrent's far more than mu's), CPU per byte much less.  Exit code 0
when every fetch returned the file's bytes with no local chunk and paid its
hosts; the ratios are reported, not enforced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from bench_mu_devnet import MIB, TERMS, AddFigures, GetFigures, MuRun, run_mu  # noqa: E402
from bench_tahoe import SHARES_NEEDED, SHARES_TOTAL, STORAGE_NODES, TahoeGrid, Timed  # noqa: E402

DEFAULT_SIZE_MIB = 256
DEFAULT_RUNS = 3
WRITE_BLOCK = 16 * MIB
LIBTORRENT_DEADLINE = 900.0
# Issue 22 §Must hold: the bars the ratios are read against (BARS below).
GET_VS_LIBTORRENT_BAR = 1.0
ADD_VS_TAHOE_BAR = 2.0
ONE_DOWN_TIME_BAR = 1.5


def say(text: str) -> None:
    """What the benchmark is doing now, on stderr: stdout keeps the figures."""
    print(f"... {text}", file=sys.stderr, flush=True)


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"nproc {os.cpu_count()}, loadavg {one:.2f} {five:.2f} {fifteen:.2f}"


def write_random(path: Path, size: int) -> bytes:
    """Write ``size`` random bytes to ``path``; return their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, WRITE_BLOCK))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.digest()


def run_libtorrent(venv: Path, sample: Path, work: Path) -> tuple[float, float, str]:
    """One libtorrent transfer in the benchmark venv's Python: seconds, CPU seconds, libtorrent's version."""
    done = subprocess.run([str(venv / "bin" / "python"), str(REPO_ROOT / "scripts" / "bench_libtorrent.py"),
                           str(sample), str(work)], capture_output=True, text=True, timeout=LIBTORRENT_DEADLINE)
    if done.returncode != 0:
        raise RuntimeError(f"the libtorrent run exited with {done.returncode}: {done.stderr.strip()}")
    result = json.loads(done.stdout)
    return float(result["seconds"]), float(result["cpu_seconds"]), str(result["version"])


def run_tahoe(venv: Path, sample: Path, work: Path, digest: bytes) -> tuple[Timed, Timed]:
    """``tahoe put`` and ``tahoe get`` on a fresh grid, each timed with its CPU and the grid's."""
    grid = TahoeGrid(venv / "bin" / "tahoe", work)
    try:
        grid.start()
        put, cap = grid.put(sample)
        got = work / "fetched.bin"
        get = grid.get(cap, got)
    finally:
        grid.stop()
    with open(got, "rb") as f:
        if hashlib.file_digest(f, "sha256").digest() != digest:
            raise RuntimeError("tahoe get returned different bytes")
    return put, get


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One run's figures: the references and mu, measured one after the other."""

    libtorrent: float  # seconds, add_torrent -> finished
    libtorrent_cpu: float  # both peers' CPU seconds over the same span
    tahoe_put: Timed
    tahoe_get: Timed
    mu: MuRun

    def seconds(self) -> dict[str, float]:
        return {name: seconds for name, (seconds, _) in self.timed().items()}

    def timed(self) -> dict[str, tuple[float, float]]:
        """Each measurement's seconds and the CPU seconds of every process doing it (the command, all peers)."""
        mu = self.mu
        return {
            "libtorrent, seeder -> downloader": (self.libtorrent, self.libtorrent_cpu),
            f"tahoe put ({SHARES_NEEDED}-of-{SHARES_TOTAL})": (self.tahoe_put.seconds, self.tahoe_put.cpu_seconds),
            "tahoe get": (self.tahoe_get.seconds, self.tahoe_get.cpu_seconds),
            "mu add, 3 replicas, all up": (mu.add_all_up.seconds, mu.add_all_up.cpu_seconds),
            "mu add, one candidate down": (mu.add_one_down.seconds, mu.add_one_down.cpu_seconds),
            "paid mu get, 3 hosts": (mu.get_3_hosts.seconds, mu.get_3_hosts.cpu_seconds),
            "paid mu get, 1 host": (mu.get_1_host.seconds, mu.get_1_host.cpu_seconds),
        }

    def ratios(self) -> dict[str, float]:
        """Issue 22's must-hold ratios, both sides from this run (rates, or times for the last)."""
        return {
            "paid mu get 1 host / libtorrent": self.libtorrent / self.mu.get_1_host.seconds,
            "paid mu get 3 hosts / libtorrent": self.libtorrent / self.mu.get_3_hosts.seconds,
            "networked mu add / tahoe put": self.tahoe_put.seconds / self.mu.add_all_up.seconds,
            "add time, one candidate down / all up": self.mu.add_one_down.seconds / self.mu.add_all_up.seconds,
        }


# Issue 22 §Must hold: each ratio's bar, and whether the ratio must be at least (True) or at most it.
BARS: dict[str, tuple[float, bool]] = {
    "paid mu get 1 host / libtorrent": (GET_VS_LIBTORRENT_BAR, True),
    "paid mu get 3 hosts / libtorrent": (GET_VS_LIBTORRENT_BAR, True),
    "networked mu add / tahoe put": (ADD_VS_TAHOE_BAR, True),
    "add time, one candidate down / all up": (ONE_DOWN_TIME_BAR, False),
}


def fetch_ok(g: GetFigures) -> bool:
    """The fetch the issue asks for: the file's bytes, none of it local, its hosts (no others) paid."""
    return g.correct and g.local_chunks == 0 and g.ledger_spent > 0 and 0 < g.hosts_paid <= g.hosts


def _first_byte(g: GetFigures) -> str:
    start_up = f" (command start-up {g.startup:.2f} s, {g.startup_cpu:.2f} CPU s)"
    return (f"{g.first_byte:.2f} s" if g.first_byte is not None else "none seen") + start_up


def _add_cpu(add: AddFigures) -> str:
    return f"CPU s: adding node {add.node_cpu:.2f} + command {add.command_cpu:.2f}, hosts {add.host_cpu:.2f}"


def print_run(number: int, size_mib: int, run: Run) -> None:
    print(f"run {number} ({machine_load()}):")
    for name, (seconds, cpu) in run.timed().items():
        print(f"  {name:<34} {size_mib / seconds:7.1f} MiB/s  {seconds:6.1f} s  {cpu:6.1f} CPU s  "
              f"{size_mib / cpu:6.1f} MiB per CPU s")
    for label, add in (("all up", run.mu.add_all_up), ("one down", run.mu.add_one_down)):
        print(f"    add, {label}: {add.chunks} chunks, {add.replicas_confirmed} replicas confirmed, "
              f"{add.under_replicated} chunks under-replicated; {_add_cpu(add)}")
    for label, g in (("3 hosts", run.mu.get_3_hosts), ("1 host", run.mu.get_1_host)):
        print(f"    get, {label}: first byte {_first_byte(g)}, local chunks {g.local_chunks}, {g.chunks_fetched} "
              f"fetched, {g.sats_spent} sats (ledgers: {g.ledger_spent} paid to {g.hosts_paid} host(s), "
              f"{g.hosts_earned} earned); CPU s: fetcher node {g.node_cpu:.1f} + command {g.command_cpu:.1f}, "
              f"hosts {g.host_cpu:.1f}; fetcher peak RSS {g.peak_rss_mib:.0f} MiB"
              f"{'' if g.correct else '; WRONG BYTES'}")
    sys.stdout.flush()


def print_summary(size_mib: int, runs: list[Run], version: str) -> None:
    print(f"\n{size_mib} MiB random file, loopback, medians of {len(runs)} run(s); libtorrent {version}, "
          f"Tahoe-LAFS {SHARES_NEEDED}-of-{SHARES_TOTAL} on {STORAGE_NODES} storage nodes")
    for name in runs[0].seconds():
        rate = statistics.median(size_mib / r.timed()[name][0] for r in runs)
        per_cpu = statistics.median(size_mib / r.timed()[name][1] for r in runs)
        print(f"  {name:<34} {rate:7.1f} MiB/s  {per_cpu:6.1f} MiB per CPU s")
    for label, gets in (("3 hosts", [r.mu.get_3_hosts for r in runs]), ("1 host", [r.mu.get_1_host for r in runs])):
        seen = [g.first_byte for g in gets if g.first_byte is not None]
        first = f"{statistics.median(seen):.2f} s" if seen else "none seen"
        first += f" (command start-up {statistics.median(g.startup for g in gets):.2f} s of it)"
        print(f"  paid mu get, {label}: first byte {first}, local chunks {max(g.local_chunks for g in gets)} at "
              f"most, CPU s: fetcher (node + command) {statistics.median(g.node_cpu + g.command_cpu for g in gets):.1f}"
              f", hosts {statistics.median(g.host_cpu for g in gets):.1f}; fetcher peak RSS "
              f"{max(g.peak_rss_mib for g in gets):.0f} MiB at most")
    print("issue 22, must hold (median of the per-run ratios):")
    for name, (bar, at_least) in BARS.items():
        values = [r.ratios()[name] for r in runs]
        value = statistics.median(values)
        holds = value >= bar if at_least else value <= bar
        print(f"  {name:<38} {value:6.2f}x  ({'>=' if at_least else '<='} {bar:g}x: {'yes' if holds else 'NO'}; "
              f"runs: {', '.join(f'{v:.2f}' for v in values)})")


def print_mu_run(number: int, size_mib: int, mu: MuRun) -> None:
    """mu's figures alone (``--mu-only``): for working on mu's CPU per byte, with no reference to compare."""
    print(f"run {number} ({machine_load()}), mu only, no reference run:")
    for name, figures in (("mu add, 3 replicas, all up", mu.add_all_up), ("mu add, one candidate down", mu.add_one_down),
                          ("paid mu get, 3 hosts", mu.get_3_hosts), ("paid mu get, 1 host", mu.get_1_host)):
        print(f"  {name:<34} {size_mib / figures.seconds:7.1f} MiB/s  {figures.seconds:6.1f} s  "
              f"{figures.cpu_seconds:6.1f} CPU s  {size_mib / figures.cpu_seconds:6.1f} MiB per CPU s")
    for label, add in (("all up", mu.add_all_up), ("one down", mu.add_one_down)):
        print(f"    add, {label}: {_add_cpu(add)}")
    for label, g in (("3 hosts", mu.get_3_hosts), ("1 host", mu.get_1_host)):
        print(f"    get, {label}: first byte {_first_byte(g)}; CPU s: fetcher node {g.node_cpu:.2f} + command "
              f"{g.command_cpu:.2f}, hosts {g.host_cpu:.2f}; peak RSS {g.peak_rss_mib:.0f} MiB"
              f"{'' if fetch_ok(g) else '; FETCH NOT AS ASKED (bytes, local chunks or payments)'}")
    sys.stdout.flush()


def bench_mu_only(work: Path, size_mib: int, count: int, terms: str, chunk_size: int | None = None) -> int:
    print(f"machine at start: {machine_load()}; mu nodes on the {terms} terms ({' '.join(TERMS[terms])})"
          + (f"; mu add --chunk-size {chunk_size}" if chunk_size is not None else ""), flush=True)
    sample = work / "sample.bin"
    digest = write_random(sample, size_mib * MIB)
    gets: list[GetFigures] = []
    for number in range(1, count + 1):
        run_dir = work / f"run-{number}"
        run_dir.mkdir()
        mu = trio.run(run_mu, run_dir / "mu", sample, digest, say, terms, chunk_size)
        shutil.rmtree(run_dir)
        print_mu_run(number, size_mib, mu)
        gets += [mu.get_3_hosts, mu.get_1_host]
    print(f"machine at end: {machine_load()}")
    return 0 if all(fetch_ok(g) for g in gets) else 3


def bench(work: Path, venv: Path, size_mib: int, count: int, terms: str, chunk_size: int | None = None) -> int:
    print(f"machine at start: {machine_load()}; mu nodes on the {terms} terms ({' '.join(TERMS[terms])})"
          + (f"; mu add --chunk-size {chunk_size}" if chunk_size is not None else ""), flush=True)
    sample = work / "sample.bin"
    digest = write_random(sample, size_mib * MIB)
    runs: list[Run] = []
    version = ""
    for number in range(1, count + 1):
        run_dir = work / f"run-{number}"
        run_dir.mkdir()
        say(f"run {number}: libtorrent seeder -> downloader")
        lt_seconds, lt_cpu, version = run_libtorrent(venv, sample, run_dir / "libtorrent")
        shutil.rmtree(run_dir / "libtorrent")
        say(f"run {number}: Tahoe-LAFS grid, tahoe put and get")
        put, get = run_tahoe(venv, sample, run_dir / "tahoe", digest)
        shutil.rmtree(run_dir / "tahoe")
        mu = trio.run(run_mu, run_dir / "mu", sample, digest, say, terms, chunk_size)
        shutil.rmtree(run_dir)
        runs.append(Run(libtorrent=lt_seconds, libtorrent_cpu=lt_cpu, tahoe_put=put, tahoe_get=get, mu=mu))
        print_run(number, size_mib, runs[-1])
    print_summary(size_mib, runs, version)
    print(f"machine at end: {machine_load()}")
    gets = [g for r in runs for g in (r.mu.get_3_hosts, r.mu.get_1_host)]
    return 0 if all(fetch_ok(g) for g in gets) else 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-vs-bittorrent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE_MIB, help=f"MiB in the file (default {DEFAULT_SIZE_MIB})")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"runs to take medians over (default {DEFAULT_RUNS})")
    parser.add_argument("--dir", default=None, help="where the work happens (default: a temporary dir)")
    parser.add_argument("--mu-only", action="store_true",
                        help="run mu's part alone, without libtorrent and Tahoe (no ratios; for profiling mu)")
    parser.add_argument("--terms", choices=sorted(TERMS), default="devnet",
                        help="the mu nodes' terms: the devnet's, a free allowance of one chunk (a paid window of 2 "
                             "requests per host), or mu node's defaults, 1,000 sats free per peer (a window of 10) "
                             "(default: devnet)")
    parser.add_argument("--chunk-size", type=int, default=None, metavar="BYTES",
                        help="mu add --chunk-size BYTES: fixed-size chunks, to weigh per-chunk against per-byte "
                             "costs (default: mu add's content-defined chunks)")
    args = parser.parse_args(argv)
    if args.size < 1 or args.runs < 1:
        parser.error("--size and --runs must be at least 1")
    venv = Path(os.environ.get("MU_BENCH_VENV", REPO_ROOT / ".venv-bench"))
    if not args.mu_only and not (venv / "bin" / "tahoe").exists():
        parser.error(f"no benchmark venv at {venv}: run scripts/bench-vs-bittorrent, which installs it")
    began = time.monotonic()
    if args.dir:
        work = Path(args.dir).resolve()
        work.mkdir(parents=True, exist_ok=False)
        code = (bench_mu_only(work, args.size, args.runs, args.terms, args.chunk_size) if args.mu_only
                else bench(work, venv, args.size, args.runs, args.terms, args.chunk_size))
    else:
        with tempfile.TemporaryDirectory(prefix="mu-vs-bittorrent-") as tmp:
            code = (bench_mu_only(Path(tmp), args.size, args.runs, args.terms, args.chunk_size) if args.mu_only
                    else bench(Path(tmp), venv, args.size, args.runs, args.terms, args.chunk_size))
    print(f"benchmark took {time.monotonic() - began:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
