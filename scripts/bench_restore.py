"""A paid folder restore beside a paid ``mu get`` of the same bytes, from the same hosts, in the same run.

Usage::

    scripts/bench-restore [--mib 96] [--runs 3] [--dir DIR] [--small-files N]

Per run, on a fresh 5-node devnet (``scripts/devnet``: a free allowance of
one chunk's price, every other GET paid):

1. node-1 creates a folder of three random files of ``--mib``/3 MiB each
   and snapshots it, and adds one random file of ``--mib`` MiB (``mu
   add``, 3 replicas); then node-1 stops;
2. node-5 stops, its chunk store is removed, and it starts again: it
   holds none of either, and fetches both from the three hosts left,
   paying;
3. once it answers and lists the hosts, node-5 gets a small warm-up file
   (untimed: it opens the sessions and payment channels with the hosts,
   which neither timed command should pay alone), then runs ``mu folder
   restore`` of the folder's read link, then ``mu get`` of the file: the
   same bytes, the same hosts, the same channels.

With ``--small-files N``, node-1 also snapshots a second folder of N files
of 4 KiB, and node-5 restores it last: its seconds and milliseconds per
file are printed too (a restore of many small files is bound by per-file
round trips and fsyncs, not by bytes).

Printed per run and as medians: MiB/s of each, the ratio restore / get,
and the GETs the hosts refused during each (``refused GetChunk`` lines in
their logs naming node-5). A restore fetches each file with its read link,
so each data chunk's GET is priced by its size and none is refused
(specs/sync.md §15 step 4, specs/payments.md §Payer link states). The
restored tree is checked against the source.
"""

from __future__ import annotations

import argparse
import hashlib
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

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
START_DEADLINE = 60.0
POLL = 0.2
PEERS_WANTED = 3  # the restarted node's table lists the three hosts before anything is timed
WARM_UP_MIB = 8  # the untimed get that opens the sessions and channels
SMALL_FILE_BYTES = 4096  # --small-files: files of this size, in SMALL_DIRS directories
SMALL_DIRS = 10


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _mu(data_dir: str, *args: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([sys.executable, "-m", "node", "--data-dir", data_dir, *args, "--json"], cwd=REPO,
                          capture_output=True, text=True, env=_env(), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"mu {' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _timed(data_dir: str, *args: str) -> float:
    began = time.monotonic()
    _mu(data_dir, *args)
    return time.monotonic() - began


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + START_DEADLINE
    while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {pid} did not stop")
        time.sleep(POLL)  # polling another process's exit, bounded


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _refusals(nodes: list[dict], node_id: str) -> int:  # type: ignore[type-arg]
    line = f"refused GetChunk from {node_id[:12]}"
    return sum((Path(n["data_dir"]) / "mu-node.log").read_text().count(line) for n in nodes)


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def one_run(root: Path, mib: int, small_files: int = 0) -> dict[str, float]:
    src = root / "folder"
    src.mkdir(parents=True)
    part = max(1, mib // 3)
    for i in range(3):
        (src / f"part-{i}.bin").write_bytes(os.urandom(part * MIB))
    small = root / "small"
    for i in range(small_files):
        directory = small / f"d{i % SMALL_DIRS}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f-{i}.txt").write_bytes(os.urandom(SMALL_FILE_BYTES))
    single = root / "file.bin"
    single.write_bytes(os.urandom(3 * part * MIB))
    warm = root / "warm-up.bin"
    warm.write_bytes(os.urandom(WARM_UP_MIB * MIB))
    devnet = subprocess.Popen([sys.executable, "scripts/devnet.py", "--nodes", "5", "--dir", str(root / "net"),
                               "--json"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env())
    assert devnet.stdout is not None
    line = devnet.stdout.readline()
    if not line:
        devnet.wait()
        raise RuntimeError(f"devnet did not start: {devnet.stderr.read() if devnet.stderr else ''}")
    nodes = json.loads(line)["nodes"]
    writer, reader = nodes[0], nodes[4]
    restarted: subprocess.Popen[bytes] | None = None
    try:
        links = _mu(writer["data_dir"], "folder", "create", str(src))
        _mu(writer["data_dir"], "folder", "snapshot", str(src))
        if small_files:
            small_links = _mu(writer["data_dir"], "folder", "create", str(small))
            _mu(writer["data_dir"], "folder", "snapshot", str(small))
        added = _mu(writer["data_dir"], "add", str(single))
        warm_up = _mu(writer["data_dir"], "add", str(warm))
        _stop(writer["pid"])
        argv = Path(f"/proc/{reader['pid']}/cmdline").read_text().split("\0")[:-1]
        _stop(reader["pid"])
        shutil.rmtree(Path(reader["data_dir"]) / "chunks")
        with open(Path(reader["data_dir"]) / "mu-node.log", "ab") as log:
            restarted = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=_env())
        deadline = time.monotonic() + START_DEADLINE
        while True:  # up (without a node, ``mu peers`` reads the saved table), and its table lists the hosts
            try:
                _mu(reader["data_dir"], "status")
                if len(_mu(reader["data_dir"], "peers")["peers"]) >= PEERS_WANTED:
                    break
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the restarted reader did not join")
            time.sleep(POLL)  # polling another process, bounded
        hosts = nodes[1:4]
        _mu(reader["data_dir"], "get", warm_up["link"], "-o", str(root / "warm-up-got.bin"))
        before = _refusals(hosts, reader["node_id"])
        restore = _timed(reader["data_dir"], "folder", "restore", links["read"], str(root / "restored"))
        between = _refusals(hosts, reader["node_id"])
        get = _timed(reader["data_dir"], "get", added["link"], "-o", str(root / "got.bin"))
        after = _refusals(hosts, reader["node_id"])
        if _tree_digest(root / "restored") != _tree_digest(src):
            raise RuntimeError("the restored folder differs from the source")
        if (root / "got.bin").read_bytes() != single.read_bytes():
            raise RuntimeError("the fetched file differs from the source")
        size = 3 * part
        row = {"restore": size / restore, "get": size / get, "ratio": get / restore,
               "refused_restore": between - before, "refused_get": after - between}
        if small_files:
            row["small"] = _timed(reader["data_dir"], "folder", "restore", small_links["read"],
                                  str(root / "restored-small"))
            if _tree_digest(root / "restored-small") != _tree_digest(small):
                raise RuntimeError("the restored small files differ from the source")
        return row
    finally:
        if restarted is not None:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(timeout=60)
        devnet.send_signal(signal.SIGTERM)
        devnet.wait(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-restore", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=96, help="MiB in the folder, and in the file (default 96)")
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh devnet; medians are reported")
    parser.add_argument("--dir", type=Path, default=None, help="where the runs work (default: a temp dir)")
    parser.add_argument("--small-files", type=int, default=0, metavar="N",
                        help=f"also restore a second folder of N files of {SMALL_FILE_BYTES} bytes (after the get)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mu-bench-restore-", dir=args.dir))
    rows = []
    try:
        for run in range(1, args.runs + 1):
            row = one_run(base / f"run-{run}", args.mib, args.small_files)
            rows.append(row)
            print(f"run {run}: restore {row['restore']:.1f} MiB/s, get {row['get']:.1f} MiB/s, "
                  f"restore / get {row['ratio']:.2f}x; GETs refused: restore {row['refused_restore']:.0f}, "
                  f"get {row['refused_get']:.0f}"
                  + (f"; {args.small_files} small files restored in {row['small']:.2f} s" if args.small_files else ""),
                  flush=True)
            shutil.rmtree(base / f"run-{run}", ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    print(f"{3 * max(1, args.mib // 3)} MiB as a 3-file folder and as one file, 5-node devnet, paid, "
          f"medians of {len(rows)} run(s):")
    print(f"  mu folder restore    {med['restore']:7.1f} MiB/s   GETs refused {med['refused_restore']:.0f}")
    print(f"  mu get               {med['get']:7.1f} MiB/s   GETs refused {med['refused_get']:.0f}")
    print(f"  restore / get        {med['ratio']:7.2f}x")
    if args.small_files:
        print(f"  mu folder restore of {args.small_files} files of {SMALL_FILE_BYTES} bytes: {med['small']:.2f} s, "
              f"{1000 * med['small'] / args.small_files:.1f} ms per file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
