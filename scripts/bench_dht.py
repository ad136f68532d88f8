"""The 10,000-node DHT simulation (issue 6; specs/dht.md §6).

Runs the same pure code the node runs -- ``protocol.kademlia.routing.RoutingTable``
answering ``find_node`` and ``protocol.kademlia.lookup.Lookup`` driving the
search -- over an in-memory network, with 0%, 10% and 30% of nodes silently
dead (they stay in everyone's tables but never answer).

Each node's table is what a long-running node converges to: for every bucket,
up to k nodes drawn at random from the IDs that fall in it.  Tables are built
lazily, when a node is first asked.  Time advances in rounds: in each round
the lookup sends what it asks for (at most alpha in flight) and every request
is answered or fails by the end of the round.

Reported per scenario:

- success: the lookup's result starts with the live node closest to the key
  (the node that answers for the key: a node lookup's target, a chunk's first
  replica), checked by brute force;
- top-3: the three closest live nodes (a chunk's R = 3 replicas) are the
  result's first three;
- exact-k: the result is exactly the k closest live nodes.  Dead nodes stay in
  everyone's tables here, so replies of k contacts carry dead ones and the
  tail of the live k can be crowded out; real tables shed dead contacts
  (ping-before-evict, removal on timeout), the simulation's do not;
- median and p99 of rounds to completion, median and p99 of the round in
  which the closest live node first answered ("hops"), queries per lookup.  The reference in the same run is a brute-force search
(sorting all N IDs by distance), printed as operations per second beside the
simulated lookups per second.

Usage: scripts/bench-dht [--quick] [--nodes N] [--lookups L] [--seed S]
"""

from __future__ import annotations

import argparse
import bisect
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol.kademlia.ids import ID_BITS, K, Contact  # noqa: E402
from protocol.kademlia.lookup import Lookup  # noqa: E402
from protocol.kademlia.routing import RoutingTable  # noqa: E402


class Network:
    """N nodes with random IDs; each node's table is built on first use."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self.rng = rng
        ids = sorted({rng.getrandbits(ID_BITS) for _ in range(n)})
        self.ids = ids
        self.contacts = {
            # One /24 per node, as on the Internet: the table's prefix limits (specs/dht.md §5.3) then never bind.
            i: Contact(i.to_bytes(20, "big"), f"10.{(j >> 8) & 255}.{j & 255}.1", 4000)
            for j, i in enumerate(ids)
        }
        self.tables: dict[int, RoutingTable] = {}
        self.dead: set[int] = set()

    def table(self, node: int) -> RoutingTable:
        t = self.tables.get(node)
        if t is None:
            t = RoutingTable(node.to_bytes(20, "big"))
            for i in range(ID_BITS):
                lo = ((node >> i) ^ 1) << i  # IDs sharing our prefix above bit i, bit i flipped
                a, b = bisect.bisect_left(self.ids, lo), bisect.bisect_left(self.ids, lo + (1 << i))
                if a == b:
                    continue
                picks = range(a, b) if b - a <= K else self.rng.sample(range(a, b), K)
                for p in picks:
                    t.add(self.contacts[self.ids[p]], 0.0)
            self.tables[node] = t
        return t

    def brute_force(self, target: int, exclude: int) -> list[int]:
        live = (i for i in self.ids if i not in self.dead and i != exclude)
        return sorted(live, key=lambda i: i ^ target)[:K]


def run_lookup(net: Network, searcher: int, target: int) -> tuple[list[int], list[int], int, int, int]:
    """One simulated lookup: (found, expected, rounds, hops to the closest, queries)."""
    own = searcher.to_bytes(20, "big")
    target_b = target.to_bytes(20, "big")
    lookup = Lookup(target_b, net.table(searcher).closest(target_b, K), own_id=own, timeout=1.0)
    expected = net.brute_force(target, searcher)
    closest_bytes = expected[0].to_bytes(20, "big") if expected else b""
    rounds = 0
    hops = 0
    while True:
        batch = lookup.next_requests(float(rounds))
        if lookup.done or not lookup.in_flight:
            break
        rounds += 1
        for c in batch:
            peer = int.from_bytes(c.node_id, "big")
            if peer in net.dead:
                lookup.on_failure(c.node_id)
            else:
                lookup.on_response(c.node_id, net.table(peer).closest(target_b, K, exclude=own))
                if c.node_id == closest_bytes and not hops:
                    hops = rounds
    found = [int.from_bytes(c.node_id, "big") for c in lookup.result()]
    return found, expected, rounds, hops, lookup.queries


def pct(values: list[int], q: float) -> float:
    s = sorted(values)
    return float(s[min(len(s) - 1, int(q * len(s)))])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 nodes and 30 lookups per scenario")
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--lookups", type=int, default=None)
    ap.add_argument("--seed", type=int, default=6)
    args = ap.parse_args()
    n = args.nodes or (2000 if args.quick else 10_000)
    lookups = args.lookups or (30 if args.quick else 300)
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    net = Network(n, rng)
    print(f"DHT simulation: {n} nodes, k={K}, alpha=3, {lookups} lookups per scenario, seed {args.seed}")

    # Reference: brute-force k-closest over all N IDs (what a lookup replaces).
    refs = 20
    t = time.perf_counter()
    for _ in range(refs):
        net.brute_force(rng.getrandbits(ID_BITS), -1)
    ref_rate = refs / (time.perf_counter() - t)
    print(f"reference: brute-force k-closest over {n} IDs: {ref_rate:.1f} ops/s")

    print(f"{'dead':>5} {'success':>8} {'top-3':>7} {'exact-k':>8} {'rounds med':>10} {'p99':>4} "
          f"{'hops med':>8} {'p99':>4} {'queries med':>11} {'lookups/s':>9} {'ratio':>6}")
    failures = 0
    for dead_fraction in (0.0, 0.10, 0.30):
        net.dead = set(rng.sample(net.ids, int(dead_fraction * n)))
        alive = [i for i in net.ids if i not in net.dead]
        ok = top3 = exact = 0
        rounds: list[int] = []
        hops: list[int] = []
        queries: list[int] = []
        t = time.perf_counter()
        for _ in range(lookups):
            found, expected, r, h, q = run_lookup(net, rng.choice(alive), rng.getrandbits(ID_BITS))
            ok += found[:1] == expected[:1]
            top3 += found[:3] == expected[:3]
            exact += found == expected
            rounds.append(r)
            hops.append(h)
            queries.append(q)
        rate = lookups / (time.perf_counter() - t)
        success_rate = 100.0 * ok / lookups
        print(f"{dead_fraction:>5.0%} {success_rate:>7.1f}% {100.0 * top3 / lookups:>6.1f}% "
              f"{100.0 * exact / lookups:>7.1f}% {statistics.median(rounds):>10.1f} {pct(rounds, 0.99):>4.0f} "
              f"{statistics.median(hops):>8.1f} {pct(hops, 0.99):>4.0f} {statistics.median(queries):>11.1f} "
              f"{rate:>9.1f} {rate / ref_rate:>6.2f}")
        threshold = 100.0 if dead_fraction == 0 else 99.0
        if success_rate < threshold:
            failures += 1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tables built: {len(net.tables)}; total {time.perf_counter() - t0:.1f} s; peak RSS {rss:.0f} MiB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
