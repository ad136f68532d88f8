"""Hypothesis: the download scheduler's invariants under random host behaviour.

A random world of hosts (honest, liars, flaky, silent) with random prices and
candidate sets is driven by random choices of which outstanding request
answers next and how.  Whatever happens (specs/network.md §4): every chunk is
accepted exactly once, from a candidate host priced within the maximum; no
host exceeds its window; a chunk never has two requests outstanding; a host
that returned wrong bytes is never asked again and never counted as paid.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.fetch import FetchScheduler, Outcome

BEHAVIOURS = ("honest", "liar", "flaky", "silent")


def data_of(i: int) -> bytes:
    return b"chunk %d" % i


@st.composite
def worlds(draw: st.DrawFn) -> dict:
    n_hosts = draw(st.integers(1, 6))
    hosts = [
        {"id": bytes([h + 1]) * 20, "price": draw(st.integers(0, 20)), "kind": draw(st.sampled_from(BEHAVIOURS))}
        for h in range(n_hosts)
    ]
    n_chunks = draw(st.integers(0, 25))
    candidates = [draw(st.lists(st.integers(0, n_hosts - 1), max_size=n_hosts, unique=True)) for _ in range(n_chunks)]
    return {
        "hosts": hosts,
        "candidates": candidates,
        "window": draw(st.integers(1, 4)),
        "max_price": draw(st.integers(0, 20)),
    }


@settings(max_examples=300, deadline=None)
@given(world=worlds(), data=st.data())
def test_scheduler_invariants(world: dict, data: st.DataObject) -> None:
    hosts = world["hosts"]
    by_id = {h["id"]: h for h in hosts}
    s = FetchScheduler(max_price_per_mib=world["max_price"], window=world["window"], request_timeout=5.0)
    for h in hosts:
        s.add_host(h["id"], h["price"])
    cands = [{hosts[i]["id"] for i in c} for c in world["candidates"]]
    for index, c in enumerate(cands):
        s.add_chunk(index, hashlib.sha256(data_of(index)).digest(), [hosts[i]["id"] for i in world["candidates"][index]])

    now = 0.0
    outstanding: dict[int, object] = {}
    accepted: dict[int, bytes] = {}
    banned: set[bytes] = set()
    paid_honest = 0
    paid_liars = 0
    timed_out: set[bytes] = set()  # honest hosts may time out too when the clock jumps
    for _ in range(2000):
        for r in s.next_requests(now):
            assert r.host_id not in banned
            assert r.host_id in cands[r.index]
            assert by_id[r.host_id]["price"] <= world["max_price"]
            assert r.index not in accepted
            assert all(o.index != r.index for o in outstanding.values())
            outstanding[r.request_id] = r
        per_host: dict[bytes, int] = {}
        for o in outstanding.values():
            per_host[o.host_id] = per_host.get(o.host_id, 0) + 1
        assert all(v <= world["window"] for v in per_host.values())
        if not outstanding:
            break
        rid = data.draw(st.sampled_from(sorted(outstanding)))
        req = outstanding.pop(rid)
        kind = by_id[req.host_id]["kind"]
        now += data.draw(st.sampled_from([0.0, 0.5, 1.0]))
        if kind == "silent":
            now = max(now, req.deadline)
            expired = s.expire(now)
            assert req in expired
            for e in expired:
                outstanding.pop(e.request_id, None)
                timed_out.add(e.host_id)
            continue
        if kind == "flaky" and data.draw(st.booleans()):
            s.request_failed(req.request_id)
            continue
        if kind == "liar":
            out = s.chunk_received(req.request_id, b"lie", now, paid=1)
            assert out is Outcome.WRONG_BYTES
            banned.add(req.host_id)
            paid_liars += 1
            for c in s.cancelled():
                assert c.host_id == req.host_id
                outstanding.pop(c.request_id)
            continue
        out = s.chunk_received(req.request_id, data_of(req.index), now, paid=2)
        assert out is Outcome.ACCEPTED
        assert req.index not in accepted
        accepted[req.index] = req.host_id
        paid_honest += 2
    assert not outstanding
    p = s.progress()
    assert p.chunks_done == len(accepted)
    assert p.sats_spent == paid_honest and p.sats_lost == paid_liars
    assert not (set(accepted.values()) & banned)
    # every chunk either arrived or is stuck with nobody usable left
    assert set(accepted) | set(s.stuck()) == set(range(len(cands)))
    assert s.done == (len(accepted) == len(cands))
    # a chunk with an honest, affordable candidate that never timed out always arrives
    for index, c in enumerate(cands):
        if any(by_id[h]["kind"] == "honest" and by_id[h]["price"] <= world["max_price"] and h not in timed_out
               for h in c):
            assert index in accepted
