"""Paid vs unpaid chunk fetch over the same transport, in the same run.

Starts `mu chain` (regtest), a `mu node` host that charges per chunk, and a
plain transport host (the transport's free ChunkServer over a store with
the same chunks), both as separate processes on loopback.  The fetcher, in
this process, fetches the same chunks in order from each, with the SAME
request window on both paths (``--window``, default 8: a request leaves as
soon as fewer than that many are in flight): unpaid with
``Session.get_chunk``, paid with ``Payer.get`` (sign a commitment, record
it durably, the host verifies, records durably, then serves).  The paying
host grants a free allowance of ``window - 1`` chunk prices, which is what
lets the payer keep ``window`` paid requests in flight while it has paid
for at most one chunk it has not received (specs/payments.md §Paid
window); with ``--window 1`` the host's allowance is 0 and both paths go
one request at a time.  Prints MiB/s of both, their ratio and the cost of payments, beside
this machine's references measured in the same run: SHA-256, AES-256-GCM,
coincurve sign+verify, and a durable SQLite commit.  Medians of the runs,
and per-request latency medians and 99th percentiles of both paths (from
the moment a request is started to its answer; with a window above 1 this
includes the wait behind the request ahead of it).

Two figures say where the cost of payments goes.  A third host, the same
``mu node`` with its data dir in RAM (/dev/shm, when there is one), is
fetched from the same way: its ledger commits skip the device flush, so
"on disk / in RAM" is what the flush per paid chunk costs.  And the CPU
seconds per chunk of the host process and of the fetcher on each path
(from /proc), which on a machine with few cores bound the throughput.

    scripts/bench-exchange               # 64 x 1 MiB chunks, 5 runs, window 8
    scripts/bench-exchange --window 1    # one request at a time on both paths
    scripts/bench-exchange --quick       # 40 x 256 KiB, 1 run (used by a test)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import coincurve  # noqa: E402
import trio  # noqa: E402
from Crypto.Cipher import AES  # noqa: E402

from node.runtime.config import load_identity  # noqa: E402
from node.runtime.daemon import PAYER_KEY_INDEX, PAYMENT_KEY_INDEX  # noqa: E402
from node.exchange import Payer  # noqa: E402
from node.ledger import LEDGER_FILE, ChannelRecord, Ledger  # noqa: E402
from node.bitcoin.rpc import RPCClient  # noqa: E402
from node.store import STORE_DIR, ChunkStore  # noqa: E402
from node.transport import ChunkServer, open_transport  # noqa: E402
from node.bitcoin.wallet import Wallet  # noqa: E402
from protocol.payments import MAX_PAID_WINDOW, REDELIVERY_DEPTH, chunk_price, paid_window  # noqa: E402

START_DEADLINE = 60.0
MIB = 1 << 20
PRICE_PER_MIB = 100  # the paying host's GET price (the node default)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _wait_file(path: Path, proc: subprocess.Popen[bytes], check=lambda text: bool(text)) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text and check(text):
            return text
        time.sleep(0.02)  # polling a child process, bounded by the deadline
    raise RuntimeError(f"timed out waiting for {path}")


def serve_plain(data_dir: str) -> None:
    """Child mode: the transport's free ChunkServer over ``data_dir``'s store."""
    async def main() -> None:
        identity = load_identity(Path(data_dir))
        with ChunkStore(Path(data_dir) / STORE_DIR) as store:
            async with open_transport(identity, ChunkServer(store), payment_key=b"\x02" + bytes(32)) as transport:
                print(json.dumps({"node_id": identity.node_id.hex(), "port": transport.port}), flush=True)
                await trio.sleep_forever()

    trio.run(main)


def references(size: int) -> dict[str, float]:
    """This machine's per-byte and per-payment limits, measured now."""
    data = os.urandom(size)
    rounds = max(1, (64 * MIB) // size)
    t = time.perf_counter()
    for _ in range(rounds):
        hashlib.sha256(data).digest()
    sha = rounds * size / MIB / (time.perf_counter() - t)
    key, nonce = os.urandom(32), os.urandom(12)
    t = time.perf_counter()
    for _ in range(rounds):
        AES.new(key, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(data)
    aes = rounds * size / MIB / (time.perf_counter() - t)
    secret = coincurve.PrivateKey()
    digest = hashlib.sha256(b"x").digest()
    t = time.perf_counter()
    for _ in range(500):
        sig = secret.sign(digest, hasher=None)
        secret.public_key.verify(sig, digest, hasher=None)
    ecdsa = 500 / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp) / "l.db") as ledger:
        ledger.add_channel(ChannelRecord(channel_id="c", role="payee", peer="p", state="open", capacity=10**12,
                                         total=0, payer_sig=None, funding_txid="t", funding_vout=0, expiry=1,
                                         params=b"", opened_at=0.0, updated_at=0.0))
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(1, 201):
            ledger.record_payment(peer="p", direction="in", kind="get", chunk="%064x" % i, price=1, amount=1,
                                  channel_id="c", total=i, payer_sig=bytes(72))
        commits = 200 / (time.perf_counter() - t)
        commit_cpu = 1e3 * (time.process_time() - cpu) / 200

    async def hops() -> float:
        cpu = time.process_time()
        for _ in range(500):
            await trio.to_thread.run_sync(int)
        return 1e3 * (time.process_time() - cpu) / 500

    return {"sha256_mib_s": sha, "aes_gcm_mib_s": aes, "ecdsa_sign_verify_s": ecdsa, "ledger_commits_s": commits,
            "ledger_commit_cpu_ms": commit_cpu, "thread_hop_cpu_ms": trio.run(hops)}


def least_payment_cpu(refs: dict[str, float]) -> float:
    """CPU ms a paid chunk cannot do without, as mu pays: a durable commit on each side, the payer's
    signature and the payee's check, and the thread hop of the payer's record (the payee's shares
    the chunk read's).  What the paid path adds beyond it is Python and scheduling."""
    return 2 * refs["ledger_commit_cpu_ms"] + 1e3 / refs["ecdsa_sign_verify_s"] + refs["thread_hop_cpu_ms"]


async def windowed(addresses: list[bytes], window: int, fetch: Callable[[bytes], Awaitable[object]],
                   latencies: list[float]) -> None:
    """Fetch ``addresses`` in order with at most ``window`` requests in flight."""
    slots = trio.Semaphore(window)

    async def one(address: bytes) -> None:
        try:
            t0 = time.perf_counter()
            await fetch(address)
            latencies.append(time.perf_counter() - t0)
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        for address in addresses:
            await slots.acquire()
            nursery.start_soon(one, address)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far; 0.0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ram_dir() -> Path | None:
    """A writable directory in RAM (tmpfs), or None: where the reference host keeps its ledger."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    return Path(tempfile.mkdtemp(prefix="mu-bench-exchange-ram-", dir=shm))


async def bench(work: Path, count: int, size: int, runs: int, window: int) -> dict[str, object]:
    procs: list[subprocess.Popen[bytes]] = []
    ram = ram_dir()
    try:
        chain_dir = work / "chain"
        chain_dir.mkdir(parents=True)
        procs.append(subprocess.Popen([sys.executable, "-m", "node", "--data-dir", str(chain_dir), "chain",
                                       "--rpc-port", "0"], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        port = _wait_file(chain_dir / "chain" / "rpc.port", procs[-1], str.isdigit)
        cookie = chain_dir / "chain" / ".cookie"
        _wait_file(cookie, procs[-1])
        url = f"http://127.0.0.1:{port}/"

        chunks = [os.urandom(size) for _ in range(count)]
        addresses = [hashlib.sha256(c).digest() for c in chunks]
        # "paid": the mu node host as it runs (ledger on disk, one device
        # flush per paid chunk); "paid_ram": the same host with its data dir
        # in RAM, so its commits skip the flush -- the reference that shows
        # what the flush costs on this machine.
        dirs = {"unpaid": work / "plain", "paid": work / "host"}
        if ram is not None:
            dirs["paid_ram"] = ram / "host"
        for data_dir in dirs.values():
            with ChunkStore(data_dir / STORE_DIR) as store:
                for address, chunk in zip(addresses, chunks):
                    store.put(address, chunk)
        # A free allowance of window - 1 chunk prices: the paid window (specs/payments.md §Paid window).
        allowance = (window - 1) * chunk_price(size, PRICE_PER_MIB)
        hosts: dict[str, dict[str, object]] = {}
        for name, data_dir in dirs.items():
            if name == "unpaid":
                procs.append(subprocess.Popen([sys.executable, __file__, "--child-plain", str(data_dir)], cwd=REPO,
                                              env=_env(), stdout=subprocess.PIPE))
                assert procs[-1].stdout is not None
                hosts[name] = json.loads(procs[-1].stdout.readline())
                continue
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "node", "--data-dir", str(data_dir), "node", "--listen", "127.0.0.1:0",
                 "--chain-rpc", url, "--chain-cookie", str(cookie), "--price-get", str(PRICE_PER_MIB),
                 "--free-allowance", str(allowance), "--loopback-devnet",
                 # Never settle mid-bench: a long run (--runs, --chunks) pays past the default threshold.
                 "--settle-threshold", str(10**12)],
                cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "wb")))
            hosts[name] = json.loads(_wait_file(data_dir / "node.json", procs[-1]))
        host_pids = dict(zip(dirs, (proc.pid for proc in procs[1:])))

        fetch_dir = work / "fetcher"
        fetch_dir.mkdir()
        identity = load_identity(fetch_dir)
        with Ledger.open(fetch_dir / LEDGER_FILE) as ledger, ChunkStore(fetch_dir / STORE_DIR) as own_store:
            async with RPCClient(url, cookie_path=cookie) as rpc:
                wallet = await Wallet.open(fetch_dir, rpc)
                await wallet.faucet(len(hosts) - 1)  # one coinbase per channel to fund
                payer = Payer(ledger=ledger, key=wallet.keys[PAYER_KEY_INDEX], max_price_per_mib_get=1_000,
                              max_price_per_mib_put=1_000)
                async with open_transport(identity, ChunkServer(own_store),
                                          payment_key=wallet.keys[PAYMENT_KEY_INDEX].public_key.data) as transport:
                    sessions = {name: await transport.connect(bytes.fromhex(str(host["node_id"])), "127.0.0.1",
                                                              int(host["port"]))  # type: ignore[call-overload]
                                for name, host in hosts.items()}
                    links = {name: await payer.link(session) for name, session in sessions.items() if name != "unpaid"}
                    tip = int(await rpc.call("getblockcount"))
                    for link in links.values():
                        capacity = max(100_000, 2 * runs * count * link.terms.get_price(size))
                        await payer.fund_channel(link, wallet, capacity=capacity, expiry=tip + 144)
                    await rpc.call("generatetoaddress", 1, wallet.address(5))
                    for link in links.values():
                        await payer.announce(link)
                        window_paid = paid_window(link.terms.get_price(size), link.terms.free_allowance)
                        assert window_paid == window, f"host terms give a paid window of {window_paid}, not {window}"
                    link = links["paid"]

                    latencies: dict[str, list[float]] = {name: [] for name in hosts}
                    # What the payer signed minus the value it received, at
                    # each answer (the fresh channel and account start at 0).
                    received = [0, -link.terms.free_allowance]  # value received, worst exposure seen

                    def fetcher(name: str) -> Callable[[bytes], Awaitable[object]]:
                        if name == "unpaid":
                            return sessions[name].get_chunk
                        host_link = links[name]

                        async def paid_one(address: bytes) -> None:
                            data = await payer.get(host_link, address, expected_size=size)
                            if host_link is link:
                                # The signed total only grows and the value received was
                                # constant since the last answer: the worst of that span.
                                assert link.channel is not None
                                received[1] = max(received[1], link.channel.total - received[0])
                                received[0] += link.terms.get_price(len(data))

                        return paid_one

                    async def run(name: str) -> None:
                        await windowed(addresses, window, fetcher(name), latencies[name])

                    for name in hosts:  # warm every path (caches, first-use costs)
                        await run(name)
                    for values in latencies.values():
                        values.clear()
                    timings: dict[str, list[float]] = {name: [] for name in hosts}
                    # CPU seconds of the host process and of this (fetcher) process per path.
                    cpu: dict[str, list[float]] = {name: [0.0, 0.0] for name in hosts}
                    for _ in range(runs):
                        for name in hosts:
                            host_before, own_before = process_cpu(host_pids[name]), time.process_time()
                            t = time.perf_counter()
                            await run(name)
                            timings[name].append(time.perf_counter() - t)
                            cpu[name][0] += process_cpu(host_pids[name]) - host_before
                            cpu[name][1] += time.process_time() - own_before
                    exposure = received[1]
                    total_paid = link.channel.total if link.channel else 0
        mib = count * size / MIB
        rate = {name: mib / statistics.median(values) for name, values in timings.items()}
        # Per-chunk latencies over every timed run: the median is what one
        # paid request costs; the tail shows stalls (a slow fsync on a shared
        # disk) that whole-run times fold in.
        chunk = {name: sorted(values) for name, values in latencies.items()}
        median = {name: statistics.median(values) for name, values in chunk.items()}
        p99 = {name: values[min(len(values) - 1, int(0.99 * len(values)))] for name, values in chunk.items()}
        ram_rate = rate.get("paid_ram")
        per_chunk = {name: [1e3 * v / (runs * count) for v in values] for name, values in cpu.items()}
        return {"unpaid_mib_s": rate["unpaid"], "paid_mib_s": rate["paid"], "ratio": rate["paid"] / rate["unpaid"],
                "paid_ram_mib_s": ram_rate, "ram_ratio": ram_rate / rate["unpaid"] if ram_rate else None,
                "unpaid_chunk_ms_median": 1e3 * median["unpaid"], "paid_chunk_ms_median": 1e3 * median["paid"],
                "chunk_median_ratio": median["unpaid"] / median["paid"],
                "unpaid_chunk_ms_p99": 1e3 * p99["unpaid"], "paid_chunk_ms_p99": 1e3 * p99["paid"],
                "sats_paid": total_paid, "chunks_per_run": count, "chunk_size": size, "runs": runs,
                "window": window, "allowance": allowance, "paid_unreceived_max": exposure,
                "cpu_ms_per_chunk": {name: {"host": v[0], "fetcher": v[1]} for name, v in per_chunk.items()}}
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if ram is not None:
            shutil.rmtree(ram, ignore_errors=True)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-plain":
        serve_plain(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 x 256 KiB chunks, one run (for tests)")
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=MIB)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=int, default=8, choices=range(1, MAX_PAID_WINDOW + 1),
                        help="requests in flight on both paths (the paying host's allowance follows)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    count, size, runs = (40, 256 * 1024, 1) if args.quick else (args.chunks, args.chunk_size, args.runs)
    if count <= REDELIVERY_DEPTH:
        # Each run fetches the same chunks: the host would serve the last
        # REDELIVERY_DEPTH of them again for free (specs/payments.md §Accounting).
        parser.error(f"--chunks must be above REDELIVERY_DEPTH ({REDELIVERY_DEPTH})")
    refs = references(size)
    with tempfile.TemporaryDirectory(prefix="mu-bench-exchange-") as tmp:
        result = trio.run(bench, Path(tmp), count, size, runs, args.window)
    result.update(refs)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = result["cpu_ms_per_chunk"]
    both = {name: c["host"] + c["fetcher"] for name, c in cpu.items()}  # type: ignore[attr-defined]
    result["least_payment_cpu_ms"] = least_payment_cpu(refs)
    result["payment_cpu_ms"] = both["paid"] - both["unpaid"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"paid vs unpaid fetch: {count} chunks x {size // 1024} KiB, in order, window {args.window} on both paths"
          f" (host allowance {result['allowance']} sats), median of {runs} run(s)")
    print(f"  unpaid fetch (plain ChunkServer)     {result['unpaid_mib_s']:9.1f} MiB/s")
    print(f"  paid fetch (mu node, per-chunk pay)  {result['paid_mib_s']:9.1f} MiB/s")
    print(f"  paid/unpaid                          {result['ratio']:9.3f}  (payments cost {100 * (1 - result['ratio']):.1f}%)")
    if result["paid_ram_mib_s"] is not None:
        print(f"  paid fetch, host ledger in RAM       {result['paid_ram_mib_s']:9.1f} MiB/s  (paid/unpaid"
              f" {result['ram_ratio']:.3f}: the same host without the disk flush per paid chunk;"
              f" on disk / in RAM {result['paid_mib_s'] / result['paid_ram_mib_s']:.3f})")
    cpu = result["cpu_ms_per_chunk"]
    print("  CPU per chunk, ms (host + fetcher): " + ", ".join(
        f"{name} {c['host']:.2f} + {c['fetcher']:.2f}" for name, c in cpu.items())
        + "  (2 CPUs shared by both processes)")
    print(f"  per request latency, median: unpaid {result['unpaid_chunk_ms_median']:.2f} ms, paid {result['paid_chunk_ms_median']:.2f} ms"
          f"  (unpaid/paid {result['chunk_median_ratio']:.3f})")
    print(f"  per request latency, p99:    unpaid {result['unpaid_chunk_ms_p99']:.2f} ms, paid {result['paid_chunk_ms_p99']:.2f} ms")
    print(f"  CPU a payment adds per chunk         {result['payment_cpu_ms']:9.2f} ms  (paid minus unpaid, host + fetcher;"
          f" with a commit per payment on each side it could not be below {result['least_payment_cpu_ms']:.2f} ms:"
          f" 2 durable commits, sign + verify, a thread hop; both ledgers now commit in groups)")
    print(f"  paid for, not received (worst)       {result['paid_unreceived_max']:9d} sats  (one chunk: {chunk_price(size, PRICE_PER_MIB)})")
    print("references measured in this run:")
    print(f"  SHA-256                              {refs['sha256_mib_s']:9.1f} MiB/s  (paid/ref {result['paid_mib_s'] / refs['sha256_mib_s']:.3f})")
    print(f"  AES-256-GCM                          {refs['aes_gcm_mib_s']:9.1f} MiB/s  (paid/ref {result['paid_mib_s'] / refs['aes_gcm_mib_s']:.3f})")
    print(f"  coincurve sign+verify                {refs['ecdsa_sign_verify_s']:9.0f} ops/s")
    print(f"  durable ledger commit                {refs['ledger_commits_s']:9.0f} commits/s"
          f"  ({refs['ledger_commit_cpu_ms']:.3f} ms CPU each)")
    print(f"  trio thread hop                      {refs['thread_hop_cpu_ms']:9.3f} ms CPU")
    print(f"  peak RSS (fetcher)                   {result['peak_rss_mib']:9.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
