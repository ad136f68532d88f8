"""The iterative lookup state machine (specs/dht.md §6), driven with no sockets."""

from __future__ import annotations

import random

from protocol.kademlia.ids import K, Contact, distance
from protocol.kademlia.lookup import Lookup
from protocol.kademlia.routing import RoutingTable


def make_network(n: int, seed: int) -> dict[bytes, RoutingTable]:
    rng = random.Random(seed)
    ids = [rng.randbytes(20) for _ in range(n)]
    contacts = {i: Contact(i, "127.0.0.1", 1000 + j) for j, i in enumerate(ids)}
    tables = {}
    for i in ids:
        t = RoutingTable(i, loopback_devnet=True)  # every simulated node is on 127.0.0.1
        for other in rng.sample(ids, n):  # buckets keep k each: near ones complete, far ones sampled
            t.add(contacts[other], 0.0)
        tables[i] = t
    return tables


def drive(tables: dict[bytes, RoutingTable], searcher: bytes, target: bytes, dead: set[bytes]) -> Lookup:
    lookup = Lookup(target, tables[searcher].closest(target), own_id=searcher)
    now = 0.0
    while True:
        batch = lookup.next_requests(now)
        assert len(lookup.in_flight) <= K
        if lookup.done or not lookup.in_flight:
            return lookup
        for c in batch:
            if c.node_id in dead:
                lookup.on_failure(c.node_id)
            else:
                lookup.on_response(c.node_id, tables[c.node_id].closest(target, K, exclude=searcher))
        now += 1.0


def test_lookup_finds_exact_k_closest() -> None:
    tables = make_network(300, 1)
    ids = list(tables)
    rng = random.Random(2)
    for _ in range(10):
        searcher, target = rng.choice(ids), rng.randbytes(20)
        lookup = drive(tables, searcher, target, set())
        brute = sorted((i for i in ids if i != searcher), key=lambda i: distance(i, target))[:K]
        assert [c.node_id for c in lookup.result()] == brute


def test_failed_nodes_are_left_out() -> None:
    tables = make_network(200, 3)
    ids = list(tables)
    rng = random.Random(4)
    searcher = ids[0]
    target = rng.randbytes(20)
    dead = set(sorted(ids[1:], key=lambda i: distance(i, target))[:5])  # the five closest are dead
    lookup = drive(tables, searcher, target, dead)
    result = [c.node_id for c in lookup.result()]
    assert not dead & set(result)
    assert result[0] == sorted((i for i in ids[1:] if i not in dead), key=lambda i: distance(i, target))[0]
    assert lookup.failures >= 1


def test_timeouts_come_from_callers_clock() -> None:
    seeds = [Contact(bytes([i]) * 20, "127.0.0.1", 1000 + i) for i in range(1, 6)]
    lookup = Lookup(bytes(20), seeds, alpha=3, timeout=2.0)
    first = lookup.next_requests(0.0)
    assert len(first) == 3 and lookup.next_requests(1.0) == []
    # At t=2 the three time out and the next two go out.
    second = lookup.next_requests(2.0)
    assert len(second) == 2 and lookup.failures == 3
    lookup.on_response(second[0].node_id, [])
    lookup.on_response(second[1].node_id, [])
    lookup.on_response(first[0].node_id, [])  # late reply: ignored
    assert lookup.done and [c.node_id for c in lookup.result()] == sorted(
        (c.node_id for c in second), key=lambda i: distance(i, bytes(20)))


def test_unsolicited_replies_and_candidate_bound() -> None:
    seed = Contact(b"\x01" * 20, "127.0.0.1", 1)
    lookup = Lookup(bytes(20), [seed], max_candidates=30)
    lookup.on_response(b"\x02" * 20, [Contact(b"\x03" * 20, "127.0.0.1", 3)])
    assert lookup.responses == 0
    (asked,) = lookup.next_requests(0.0)
    flood = [Contact(bytes([0x80]) + i.to_bytes(19, "big"), "127.0.0.1", 5) for i in range(100)]
    lookup.on_response(asked.node_id, flood)
    assert len(lookup._nodes) <= 30  # at most k taken from one reply, total bounded


def test_alpha_in_flight_until_progress_stalls() -> None:
    def c(n: int) -> Contact:
        return Contact(n.to_bytes(20, "big"), "127.0.0.1", n)

    lookup = Lookup(bytes(20), [c(n) for n in range(2, 30)], alpha=3)
    first = lookup.next_requests(0.0)
    assert [x.port for x in first] == [2, 3, 4]
    # A reply naming a closer contact is progress: still alpha in flight.
    lookup.on_response(c(2).node_id, [c(1)])
    assert [x.port for x in lookup.next_requests(0.1)] == [1]
    # Three replies in a row with nothing closer: ask all of the k closest not yet asked.
    for n in (3, 4, 1):
        lookup.on_response(c(n).node_id, [c(40)])
    burst = lookup.next_requests(0.2)
    assert [x.port for x in burst] == list(range(5, 21))
    assert len(lookup.in_flight) == 16 and not lookup.done


def _c(n: int) -> Contact:
    return Contact(n.to_bytes(20, "big"), "127.0.0.1", n)


def test_a_slow_request_stops_holding_the_end_and_frees_its_slot() -> None:
    # specs/dht.md §6 "Slow requests": past the soft timeout a request no longer counts among the
    # alpha in flight nor among the k closest the lookup waits for; only the timeout fails it.
    lookup = Lookup(bytes(20), [_c(n) for n in range(1, 6)], alpha=3, timeout=2.0, soft_timeout=0.5)
    assert [x.port for x in lookup.next_requests(0.0)] == [1, 2, 3]
    assert lookup.next_deadline() == 0.5 and lookup.next_requests(0.4) == []
    assert [x.port for x in lookup.next_requests(0.5)] == [4, 5]  # 1, 2, 3 slow: their slots are free
    assert [x.port for x in lookup.slow] == [1, 2, 3] and lookup.failures == 0
    lookup.on_response(_c(4).node_id, [])
    lookup.on_response(_c(5).node_id, [])
    assert lookup.done and [x.port for x in lookup.result()] == [4, 5]
    assert len(lookup.in_flight) == 3  # still unanswered: the caller abandons them, they did not fail


def test_a_slow_answer_that_comes_in_time_is_used() -> None:
    lookup = Lookup(bytes(20), [_c(n) for n in (2, 3, 4)], alpha=3, timeout=2.0, soft_timeout=0.5)
    lookup.next_requests(0.0)
    lookup.on_response(_c(3).node_id, [])
    lookup.on_response(_c(4).node_id, [])
    assert not lookup.done and lookup.next_requests(0.5) == [] and lookup.done  # 2 is slow: no longer awaited
    lookup.on_response(_c(2).node_id, [_c(1)])  # before the caller ended the lookup: counted, and 1 is new
    assert not lookup.done and [x.port for x in lookup.next_requests(0.6)] == [1]
    lookup.on_response(_c(1).node_id, [])
    assert lookup.done and [x.port for x in lookup.result()] == [1, 2, 3, 4]


def test_slow_requests_hold_the_end_while_nobody_answered() -> None:
    # A loaded machine (every answer slow) must not end lookups empty: the timeout decides then.
    lookup = Lookup(bytes(20), [_c(1)], timeout=2.0, soft_timeout=0.5)
    lookup.next_requests(0.0)
    assert lookup.next_requests(0.5) == [] and lookup.slow and not lookup.done
    assert lookup.next_deadline() == 2.0
    lookup.on_response(_c(1).node_id, [])
    assert lookup.done and [x.port for x in lookup.result()] == [1]
    dead = Lookup(bytes(20), [_c(1)], timeout=2.0, soft_timeout=0.5)
    dead.next_requests(0.0)
    dead.next_requests(0.5)
    assert not dead.done and dead.next_requests(2.0) == [] and dead.failures == 1 and dead.done
    assert dead.result() == [] and dead.next_deadline() is None


def test_without_a_soft_timeout_requests_hold_the_end_until_the_timeout() -> None:
    lookup = Lookup(bytes(20), [_c(1), _c(2)], timeout=2.0)
    lookup.next_requests(0.0)
    lookup.on_response(_c(2).node_id, [])
    assert lookup.next_requests(1.9) == [] and not lookup.done and lookup.next_deadline() == 2.0
