"""Benchmark: erasure coding (specs/erasure.md), measured side by side in one run.

Usage::

    scripts/bench-erasure [--quick] [--size MIB] [--runs N] [--no-devnet]

1. Codec: ``protocol.erasure.encode_stripe`` / ``decode_stripe`` over a file's
   worth of 1 MiB chunks, 4-of-8, beside zfec's own ``Encoder.encode`` /
   ``Decoder.decode`` of the same blocks (the library's raw speed): MiB/s of
   file bytes, medians over ``--runs``, and the ratio.  Decoding takes shares
   2..5 (two data, two parity), so the Reed-Solomon decode really runs.
2. Bytes stored per byte of file: 4-of-8 (shares and the stripe map) vs 3
   replicas, from the real chunk sizes of an added file.
3. On one devnet of real ``mu node`` processes: the same file added
   replicated (``mu add``, R = 3) and 4-of-8; ``get`` of each by another node,
   MiB/s and the ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
import zfec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from node.api.control import ControlClient  # noqa: E402
from protocol.erasure import decode_stripe, encode_stripe  # noqa: E402

MIB = 1 << 20
K, N = 4, 8


def stripes_of(data: bytes, chunk: int) -> list[list[tuple[bytes, bytes]]]:
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    pairs = [(hashlib.sha256(c).digest(), c) for c in chunks]
    return [pairs[i:i + K] for i in range(0, len(pairs), K)]


def bench_codec(size: int, runs: int) -> dict[str, float]:
    data = os.urandom(size)
    stripes = stripes_of(data, MIB)
    rates: dict[str, list[float]] = {"encode": [], "raw_encode": [], "decode": [], "raw_decode": []}
    for _ in range(runs):
        t = time.perf_counter()
        encoded = [encode_stripe(s, K, N) for s in stripes]
        rates["encode"].append(size / MIB / (time.perf_counter() - t))
        blocks = [tuple(c.ljust(max(len(x) for _, x in s), b"\0") for _, c in s) + tuple(
            bytes(max(len(x) for _, x in s)) for _ in range(K - len(s))) for s in stripes]
        t = time.perf_counter()
        raw = [zfec.Encoder(K, N).encode(b) for b in blocks]
        rates["raw_encode"].append(size / MIB / (time.perf_counter() - t))
        t = time.perf_counter()
        for stripe, shares in encoded:
            decode_stripe(stripe, K, {i: shares[i] for i in (2, 3, 4, 5)})
        rates["decode"].append(size / MIB / (time.perf_counter() - t))
        t = time.perf_counter()
        for shares in raw:
            zfec.Decoder(K, N).decode(tuple(shares[i] for i in (2, 3, 4, 5)), (2, 3, 4, 5))
        rates["raw_decode"].append(size / MIB / (time.perf_counter() - t))
    return {name: statistics.median(values) for name, values in rates.items()}


def run_devnet(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "file.bin"
        src.write_bytes(os.urandom(size))
        proc = subprocess.Popen([sys.executable, "scripts/devnet.py", "--nodes", "10", "--dir", f"{tmp}/net", "--json"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        summary = json.loads(proc.stdout.readline())
        try:
            nodes = summary["nodes"]
            owner = ControlClient.from_data_dir(Path(nodes[0]["data_dir"]))

            async def run() -> dict[str, float]:
                replicated = await owner.run_stream("add", {"path": str(src)}, lambda e: None)
                striped = await owner.run_stream("add", {"path": str(src), "k": K, "n": N}, lambda e: None)
                # Two readers that hold neither file, so neither get is served from a local store.
                one = ControlClient.from_data_dir(Path(nodes[-1]["data_dir"]))
                two = ControlClient.from_data_dir(Path(nodes[-2]["data_dir"]))
                t = time.perf_counter()
                await one.run_stream("get", {"link": replicated["link"], "output": f"{tmp}/r.bin"}, lambda e: None)
                replicated_s = time.perf_counter() - t
                t = time.perf_counter()
                await two.run_stream("get", {"link": striped["link"], "stripes": striped["stripes"],
                                             "output": f"{tmp}/s.bin"}, lambda e: None)
                striped_s = time.perf_counter() - t
                assert Path(f"{tmp}/r.bin").read_bytes() == Path(f"{tmp}/s.bin").read_bytes() == src.read_bytes()
                return {"replicated_get": size / MIB / replicated_s, "striped_get": size / MIB / striped_s}

            return trio.run(run)
        finally:
            proc.terminate()
            proc.wait(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=64, help="MiB of file for the codec (default 64)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-devnet", action="store_true")
    args = parser.parse_args()
    size = (4 if args.quick else args.size) * MIB
    codec = bench_codec(size, 1 if args.quick else args.runs)
    print(f"codec 4-of-8 over {size // MIB} MiB, medians of {1 if args.quick else args.runs} runs (machine shared, loaded):")
    print(f"  encode  {codec['encode']:8.1f} MiB/s   zfec raw {codec['raw_encode']:8.1f} MiB/s   "
          f"ratio {codec['encode'] / codec['raw_encode']:.2f}")
    print(f"  decode  {codec['decode']:8.1f} MiB/s   zfec raw {codec['raw_decode']:8.1f} MiB/s   "
          f"ratio {codec['decode'] / codec['raw_decode']:.2f}  (shares 2..5: two parity)")
    stripes = stripes_of(os.urandom(size), MIB)
    map_size = 44 + len(stripes) * (5 + K * 36 + N * 32)
    stored = sum(N * max(len(c) for _, c in s) for s in stripes) + N * map_size  # the map is on n hosts too
    print(f"bytes stored per file byte ({MIB} B chunks): 4-of-8 {stored / size:.4f} (shares + the map on n hosts), "
          "3 replicas 3.0000 (+ the manifests, also in the 4-of-8 stripes)")
    if not args.no_devnet:
        net = run_devnet((8 if args.quick else 32) * MIB)
        print(f"mu get on one 10-node devnet: replicated (R=3) {net['replicated_get']:.1f} MiB/s, "
              f"4-of-8 {net['striped_get']:.1f} MiB/s, ratio {net['striped_get'] / net['replicated_get']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
