"""Reciprocal traffic in balance mode vs one-way paid traffic, over the same transport, in one run.

Two nodes that both offer storage PUT chunks to each other at once, with no
channel payment (specs/payments.md §Service balance); then, on the same
transport and the same machine, one node PUTs as many bytes to a host that
charges every chunk through a payment channel (the host's allowance lets the
same number of requests be in flight).  Each run alternates the two; the
report gives each path's throughput (MiB/s of chunks stored, both directions
counted), the process CPU per MiB (both nodes run in this process), and the
ratio reciprocal / paid (the bar is >= 0.9).  Usage:
``scripts/bench-reciprocity [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.payments import MIB, chunk_price  # noqa: E402
from protocol.payments.balance import BalanceTerms  # noqa: E402
from tests.helpers.balance import BalancePeer, open_balance_peer, open_channel, random_chunk  # noqa: E402

OFFER = 100 * 10**9
WINDOW = 8  # requests in flight per direction, on both paths


async def put_all(me: BalancePeer, host: BalancePeer, chunks: list[tuple[bytes, bytes]]) -> None:
    """PUT ``chunks`` to ``host``, ``WINDOW`` at a time."""
    link = await me.link(host)
    queue = iter(chunks)

    async def worker() -> None:
        for address, data in queue:
            await me.payer.put(link, address, data)

    async with trio.open_nursery() as nursery:
        for _ in range(WINDOW):
            nursery.start_soon(worker)


async def timed(*flows: tuple[BalancePeer, BalancePeer, list[tuple[bytes, bytes]]]) -> tuple[float, float]:
    """Run the flows at once; (wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for me, host, chunks in flows:
            nursery.start_soon(put_all, me, host, chunks)
    return time.perf_counter() - wall, time.process_time() - cpu


async def bench(work: Path, count: int, size: int, runs: int) -> dict[str, object]:
    terms = BalanceTerms()  # the defaults a node runs with
    price = chunk_price(size, 300)
    async with open_balance_peer(work / "a", "a", offer=OFFER, terms=terms) as a, \
            open_balance_peer(work / "b", "b", offer=OFFER, terms=terms) as b, \
            open_balance_peer(work / "payer", "payer", offer=0, terms=terms) as payer, \
            open_balance_peer(work / "host", "host", offer=0, terms=terms, free_allowance=WINDOW * price) as host:
        for one, other in ((a, b), (b, a), (payer, host)):
            open_channel(one, other, capacity=10**8)
        rates: dict[str, list[float]] = {"reciprocal": [], "paid": []}
        cpu: dict[str, list[float]] = {"reciprocal": [], "paid": []}
        for run in range(runs + 1):  # the first is a warm-up
            half = [random_chunk(size) for _ in range(count)]
            other_half = [random_chunk(size) for _ in range(count)]
            one_way = [random_chunk(size) for _ in range(2 * count)]
            mib = 2 * count * size / MIB
            for name, flows in (("reciprocal", ((a, b, half), (b, a, other_half))),
                                ("paid", ((payer, host, one_way),))):
                wall, used = await timed(*flows)
                if run:
                    rates[name].append(mib / wall)
                    cpu[name].append(used / mib)
        paid_sats = sum(p.amount for p in payer.ledger.payments())
        balance_payments = len(a.ledger.payments()) + len(b.ledger.payments())
        view = a.balance.view(b.node_id)
    reciprocal, paid = statistics.median(rates["reciprocal"]), statistics.median(rates["paid"])
    return {
        "chunks_per_run": 2 * count, "chunk_size": size, "runs": runs, "window": WINDOW,
        "reciprocal_mib_s": reciprocal, "paid_mib_s": paid, "ratio": reciprocal / paid,
        "ratios": [r / p for r, p in zip(rates["reciprocal"], rates["paid"])],
        "cpu_s_per_mib": {name: statistics.median(values) for name, values in cpu.items()},
        "paid_sats": paid_sats, "balance_payments": balance_payments,
        "balance_net": view.net if view is not None else 0,
        "load_average": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run (40 chunks of 256 KiB per run, 2 runs)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    count, runs = (20, 2) if args.quick else (100, 5)
    runs = args.runs if args.runs is not None else runs
    with tempfile.TemporaryDirectory(prefix="mu-bench-reciprocity-") as work:
        report = trio.run(bench, Path(work), count, 256 * 1024, runs)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cpu = report["cpu_s_per_mib"]
    assert isinstance(cpu, dict)
    print(f"{report['chunks_per_run']} chunks of {report['chunk_size'] // 1024} KiB per run, {report['runs']} runs, "
          f"{report['window']} in flight per direction (load average {report['load_average']:.1f})")
    print(f"reciprocal (balance mode, both ways): {report['reciprocal_mib_s']:.1f} MiB/s, "
          f"CPU {1e3 * cpu['reciprocal']:.1f} ms/MiB")
    print(f"one-way paid (a payment per chunk):   {report['paid_mib_s']:.1f} MiB/s, CPU {1e3 * cpu['paid']:.1f} ms/MiB")
    ratios = report["ratios"]
    assert isinstance(ratios, list)
    print(f"ratio reciprocal / paid: {report['ratio']:.2f} of the median rates; median of the runs' ratios "
          f"{statistics.median(ratios):.2f} (per run: {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"sats paid one-way: {report['paid_sats']}; balance payments: {report['balance_payments']}, "
          f"net {report['balance_net']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
