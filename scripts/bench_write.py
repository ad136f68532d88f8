"""A fetched file's plaintext write: through the page cache vs mu's direct writes, in the same run.

``mu get`` writes the file it fetches through ``PlainWriter``
(node/files/_output.py): direct I/O where the file system allows it.  This
measures it beside the ordinary alternative, ``os.write`` of each piece
into a new file (the page cache), as the fetch wrote before.  Pieces are
the size of a content-defined chunk's plaintext (``--piece``, default
1,200,000 bytes: not a multiple of the block size).  Each way runs
``--runs`` times, alternating, each into a new file in ``--dir`` (default:
a temp dir where /tmp is), fsynced inside the clock as a fetch fsyncs its
file.  Prints MiB/s and CPU ms per MiB (user + system of this process),
medians, and the ratios.

On the reference VM a buffered write into pages the guest has not touched
lately costs far more CPU (1.5 to 2.3 ms per MiB, against 0.2 to 0.3 into
pages freed moments before): the host backs such pages again on first
touch.  A fetch after other work meets that; this script, whose files
reuse each other's pages, shows the warm case, the least that direct I/O
saves.

    scripts/bench-write                 # 1 GiB, 3 runs
    scripts/bench-write --size 256      # MiB
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.files._output import PlainWriter  # noqa: E402

MIB = 1 << 20


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _buffered(path: Path, pieces: list[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _plain_writer(path: Path, pieces: list[bytes]) -> bool:
    with open(path, "wb") as out:
        writer = PlainWriter(out, path)
        for piece in pieces:
            writer.write(piece)
        direct = writer.direct
        writer.close()
    return direct


def _timed(write: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), _cpu()
    result = write()
    return time.perf_counter() - wall, _cpu() - cpu, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="MiB per file (default 1024)")
    parser.add_argument("--piece", type=int, default=1_200_000, help="bytes per write (default 1,200,000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temp dir)")
    args = parser.parse_args()
    total = args.size * MIB
    rng = os.urandom(args.piece)
    pieces = [rng] * (total // args.piece) + ([rng[:total % args.piece]] if total % args.piece else [])
    results: dict[str, list[tuple[float, float]]] = {"buffered": [], "PlainWriter": []}
    direct_seen = False

    def synced(write: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            result = write()
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # inside the clock: a fetch fsyncs its file before the rename
            finally:
                os.close(fd)
            return result
        return run

    with tempfile.TemporaryDirectory(prefix="mu-bench-write-", dir=args.dir) as tmp:
        path = Path(tmp) / "file"
        for _ in range(args.runs):
            for name in results:
                if name == "PlainWriter":
                    wall, cpu, direct = _timed(synced(lambda: _plain_writer(path, pieces)))
                    direct_seen = direct_seen or bool(direct)
                else:
                    wall, cpu, _ = _timed(synced(lambda: _buffered(path, pieces)))
                path.unlink()
                results[name].append((wall, cpu))
    print(f"writing {args.size} MiB in pieces of {args.piece} bytes, median of {args.runs} run(s)"
          f" (PlainWriter {'direct' if direct_seen else 'fell back to the page cache: no O_DIRECT here'})")
    base = statistics.median(args.size / wall for wall, _ in results["buffered"])
    for name, runs in results.items():
        rate = statistics.median(args.size / wall for wall, _ in runs)
        cpu_ms = statistics.median(1e3 * cpu / args.size for _, cpu in runs)
        print(f"  {name:12s} {rate:8.0f} MiB/s  {cpu_ms:6.2f} ms CPU per MiB  ({rate / base:.2f}x buffered's rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
