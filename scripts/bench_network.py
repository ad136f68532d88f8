"""Benchmark: fetching a file from 3 hosts vs 1 host vs plain TCP on loopback.

Usage::

    scripts/bench-network [--quick] [--size MIB] [--rss-size MIB] [--runs N]

Every party is its own process, as in a real network: host processes serve
one chunk store through the transport (encrypted Noise sessions, specs/wire.md)
and ChunkServer; each fetch runs in a fresh process that connects to the hosts
and runs ``node.files.fetcher.fetch_file`` (scheduler, verification, decryption,
atomic write) and reports its time and peak RSS.  In the same run, the same
number of bytes goes through one plain TCP connection between two processes
(sendall -> recv_into, 1 MiB buffers): the machine's reference.  Prints MB/s
of each, medians over ``--runs``, the ratios, the time to first byte (from
the fetch's start to its first plaintext written; the bar is 1 s), and the
fetcher's peak RSS for a ``--rss-size`` file (default 1 GiB; the bar is 150 MiB).

``--quick`` uses small sizes so a test can prove the script works.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MIB = 1 << 20
RSS_BAR_MIB = 150
TTFB_BAR_SECONDS = 1.0
BUFFER = MIB


# -- child processes -------------------------------------------------------------


def serve_chunks(store_dir: str) -> None:
    """Host: serve the store over the transport until SIGTERM; print 'node_id port'."""
    import trio
    from coincurve import PrivateKey

    from node.store import ChunkStore
    from node.transport import ChunkServer, open_transport
    from protocol.identity import Identity

    async def main() -> None:
        identity = Identity(os.urandom(32))
        store = ChunkStore(Path(store_dir))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_transport(identity, ChunkServer(store),
                                      payment_key=PrivateKey().public_key.format()) as transport:
                print(identity.node_id.hex(), transport.port, flush=True)
                async for _ in signals:
                    break

    trio.run(main)


def fetch(link_text: str, hosts: str, out: str, window: int) -> None:
    """Fetcher: connect to ``id@port,...``, fetch the link, print time and peak RSS as JSON."""
    import trio
    from coincurve import PrivateKey

    from node.files.fetcher import FetchProgress, SessionSource, fetch_file
    from node.store import ChunkStore
    from node.transport import ChunkServer, open_transport
    from protocol.chunks import Link
    from protocol.identity import Identity

    async def main() -> dict[str, float]:
        link = Link.parse(link_text)
        scratch = Path(out).parent / f"fetcher-store-{os.getpid()}"
        async with open_transport(Identity(os.urandom(32)), ChunkServer(ChunkStore(scratch)),
                                  payment_key=PrivateKey().public_key.format()) as me:
            sources = []
            for item in hosts.split(","):
                node_id, port = item.split("@")
                sources.append(SessionSource(await me.connect(bytes.fromhex(node_id), "127.0.0.1", int(port))))
            start = time.perf_counter()
            first_byte: list[float] = []

            def on_progress(p: FetchProgress) -> None:
                if p.bytes_written and not first_byte:
                    first_byte.append(time.perf_counter() - start)

            result = await fetch_file(link, Path(out), sources, max_price_per_mib=0, window=window,
                                      on_progress=on_progress)
            seconds = time.perf_counter() - start
        return {"seconds": seconds, "bytes": result.size, "ttfb": first_byte[0] if first_byte else seconds,
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    print(json.dumps(trio.run(main)), flush=True)


def serve_tcp(path: str) -> None:
    """Reference sender: one connection, the file's bytes with sendall in 1 MiB blocks."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    with conn, open(path, "rb") as f:
        while block := f.read(BUFFER):
            conn.sendall(block)


def fetch_tcp(port: int, size: int) -> None:
    """Reference receiver: recv_into a 1 MiB buffer until ``size`` bytes arrived."""
    buf = bytearray(BUFFER)
    view = memoryview(buf)
    got = 0
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        while got < size:
            n = s.recv_into(view)
            if not n:
                break
            got += n
    print(json.dumps({"seconds": time.perf_counter() - start, "bytes": got}), flush=True)


# -- the benchmark ---------------------------------------------------------------


def _child(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def start_hosts(store_dir: Path, count: int) -> list[tuple[subprocess.Popen[str], str]]:
    hosts = []
    for _ in range(count):
        proc = subprocess.Popen(_child("--serve", str(store_dir)), stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        assert proc.stdout is not None
        node_id, port = proc.stdout.readline().split()
        hosts.append((proc, f"{node_id}@{port}"))
    return hosts


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_fetch(link: str, hosts: list[str], out: Path, window: int) -> dict[str, float]:
    res = subprocess.run(_child("--fetch", link, ",".join(hosts), str(out), str(window)),
                         capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    out.unlink()
    return json.loads(res.stdout)


def run_tcp(path: Path, size: int) -> dict[str, float]:
    server = subprocess.Popen(_child("--serve-tcp", str(path)), stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    port = server.stdout.readline().strip()
    res = subprocess.run(_child("--fetch-tcp", port, str(size)), capture_output=True, text=True, check=True)
    server.wait(timeout=60)
    return json.loads(res.stdout)


def make_file(work: Path, name: str, size: int) -> tuple[Path, str, Path]:
    """Write ``size`` random bytes, add them to a store; return (file, link, store dir)."""
    from node.files.local import add_file
    from node.store import ChunkStore

    src = work / f"{name}.bin"
    with open(src, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n
    store_dir = work / f"{name}-store"
    with ChunkStore(store_dir) as store:
        link = add_file(store, src).link
    return src, str(link), store_dir


def mbps(result: dict[str, float]) -> float:
    return result["bytes"] / MIB / result["seconds"]


def bench(size_mib: int, rss_mib: int, runs: int, window: int) -> int:
    with tempfile.TemporaryDirectory(prefix="mu-bench-network-") as tmp:
        work = Path(tmp)
        src, link, store_dir = make_file(work, "speed", size_mib * MIB)
        hosts = start_hosts(store_dir, 3)
        try:
            rates: dict[str, list[float]] = {"plain TCP": [], "mu, 1 host": [], "mu, 3 hosts": []}
            ttfb: list[float] = []
            for _ in range(runs):
                rates["plain TCP"].append(mbps(run_tcp(src, size_mib * MIB)))
                one = run_fetch(link, [hosts[0][1]], work / "out", window)
                three = run_fetch(link, [h for _, h in hosts], work / "out", window)
                rates["mu, 1 host"].append(mbps(one))
                rates["mu, 3 hosts"].append(mbps(three))
                ttfb += [one["ttfb"], three["ttfb"]]
            src.unlink()
            rss_src, rss_link, rss_store = make_file(work, "rss", rss_mib * MIB)
            rss_src.unlink()
            stop([p for p, _ in hosts])
            hosts = start_hosts(rss_store, 3)
            big = run_fetch(rss_link, [h for _, h in hosts], work / "out", window)
        finally:
            stop([p for p, _ in hosts])
    medians = {k: statistics.median(v) for k, v in rates.items()}
    tcp = medians["plain TCP"]
    print(f"fetch of a {size_mib} MiB file on loopback, median of {runs} run(s), window {window}")
    for name, rate in medians.items():
        print(f"  {name:<12} {rate:9.1f} MiB/s   {rate / tcp:6.3f}x plain TCP")
    print(f"  3 hosts / 1 host: {medians['mu, 3 hosts'] / medians['mu, 1 host']:.2f}x")
    first = statistics.median(ttfb)
    print(f"time to first byte: {first * 1000:.0f} ms median of the fetches above, {big['ttfb'] * 1000:.0f} ms "
          f"for the {rss_mib} MiB file (bar {TTFB_BAR_SECONDS:g} s: {'ok' if first < TTFB_BAR_SECONDS else 'OVER'})")
    ok = big["maxrss_mib"] < RSS_BAR_MIB
    print(f"fetcher peak RSS for a {rss_mib} MiB file from 3 hosts: {big['maxrss_mib']:.1f} MiB "
          f"({mbps(big):.1f} MiB/s; bar {RSS_BAR_MIB} MiB: {'ok' if ok else 'OVER'})")
    return 0 if ok and first < TTFB_BAR_SECONDS else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--serve":
        serve_chunks(argv[1])
        return 0
    if argv and argv[0] == "--fetch":
        fetch(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    if argv and argv[0] == "--serve-tcp":
        serve_tcp(argv[1])
        return 0
    if argv and argv[0] == "--fetch-tcp":
        fetch_tcp(int(argv[1]), int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="scripts/bench-network", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (16 MiB, RSS on 64 MiB), one run")
    parser.add_argument("--size", type=int, default=None, help="MiB fetched for the speed runs (default 256)")
    parser.add_argument("--rss-size", type=int, default=None, help="MiB fetched for the RSS run (default 1024)")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (default 3)")
    parser.add_argument("--window", type=int, default=8, help="requests outstanding per host")
    args = parser.parse_args(argv)
    size = args.size or (16 if args.quick else 256)
    rss = args.rss_size or (64 if args.quick else 1024)
    runs = args.runs or (1 if args.quick else 3)
    return bench(size, rss, runs, args.window)


if __name__ == "__main__":
    sys.exit(main())
