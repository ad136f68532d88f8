"""FetchScheduler unit tests (specs/network.md §4)."""

from __future__ import annotations

import hashlib

import pytest

from protocol.fetch import MAX_CHUNK_ROUNDS, MAX_HOST_FAILURES, FetchError, FetchScheduler, Outcome


def host(i: int) -> bytes:
    return bytes([i]) * 20


def chunk(i: int) -> bytes:
    return b"chunk-%d" % i


def addr(i: int) -> bytes:
    return hashlib.sha256(chunk(i)).digest()


def scheduler(n_chunks: int, hosts: dict[int, int], *, window: int = 2, max_price: int = 100,
              timeout: float = 10.0) -> FetchScheduler:
    s = FetchScheduler(max_price_per_mib=max_price, window=window, request_timeout=timeout)
    for h, price in hosts.items():
        s.add_host(host(h), price)
    for i in range(n_chunks):
        s.add_chunk(i, addr(i), [host(h) for h in hosts])
    return s


def test_windows_bound_outstanding_requests() -> None:
    s = scheduler(10, {1: 5, 2: 5}, window=3)
    reqs = s.next_requests(0.0)
    assert len(reqs) == 6
    assert sorted(r.index for r in reqs) == list(range(6))
    per_host = {h: sum(1 for r in reqs if r.host_id == host(h)) for h in (1, 2)}
    assert per_host == {1: 3, 2: 3}
    assert s.next_requests(0.0) == []


def test_cheaper_host_preferred() -> None:
    s = scheduler(4, {1: 50, 2: 10}, window=2)
    reqs = s.next_requests(0.0)
    assert [r.host_id for r in reqs[:2]] == [host(2), host(2)]
    assert {r.host_id for r in reqs[2:]} == {host(1)}


def test_faster_host_preferred_at_equal_price() -> None:
    s = scheduler(6, {1: 5, 2: 5}, window=1)
    a, b = s.next_requests(0.0)
    slow, fast = (a, b) if a.host_id == host(1) else (b, a)
    assert s.chunk_received(fast.request_id, chunk(fast.index), 1.0) is Outcome.ACCEPTED
    assert s.chunk_received(slow.request_id, chunk(slow.index), 5.0) is Outcome.ACCEPTED
    # both free again: the faster host is picked for the earliest chunk
    reqs = s.next_requests(5.0)
    assert reqs[0].host_id == fast.host_id and reqs[0].index == 2


def test_a_request_goes_where_it_would_be_answered_soonest() -> None:
    # Equal prices: a host twice as fast per request takes twice the requests, and the slower one
    # still takes its share; "the faster host first" alone let one host take every request its window
    # held (issue 22: of three hosts, one at a time served a whole get).
    s = scheduler(2, {1: 5, 2: 5}, window=16)
    first = {r.host_id: r for r in s.next_requests(0.0)}
    assert s.chunk_received(first[host(1)].request_id, chunk(first[host(1)].index), 0.010) is Outcome.ACCEPTED
    assert s.chunk_received(first[host(2)].request_id, chunk(first[host(2)].index), 0.020) is Outcome.ACCEPTED
    for i in range(2, 14):
        s.add_chunk(i, addr(i), [host(1), host(2)])
    reqs = s.next_requests(0.020)
    assert [r.index for r in reqs] == list(range(2, 14))
    assert {h: sum(1 for r in reqs if r.host_id == host(h)) for h in (1, 2)} == {1: 8, 2: 4}


def test_a_request_is_timed_by_the_queue_it_found() -> None:
    # Host 1 answers four requests sent together one after the other, 10 ms each; host 2 one in 15 ms.
    # Per request, host 1 is the faster: its last answer took 40 ms only because three came first.
    s = scheduler(0, {1: 5, 2: 5}, window=4)
    for i in range(4):
        s.add_chunk(i, addr(i), [host(1)])
    s.add_chunk(4, addr(4), [host(2)])
    reqs = s.next_requests(0.0)
    assert [r.host_id for r in reqs] == [host(1)] * 4 + [host(2)]
    for n, r in enumerate(reqs[:4], 1):
        assert s.chunk_received(r.request_id, chunk(r.index), 0.010 * n) is Outcome.ACCEPTED
    assert s.chunk_received(reqs[4].request_id, chunk(4), 0.015) is Outcome.ACCEPTED
    s.add_chunk(5, addr(5), [host(1), host(2)])
    (nxt,) = s.next_requests(0.040)
    assert nxt.host_id == host(1)


def test_host_above_max_price_never_used() -> None:
    s = scheduler(3, {1: 101}, max_price=100)
    assert s.next_requests(0.0) == []
    assert s.stuck() == [0, 1, 2]


def test_wrong_bytes_ban_host_and_requeue() -> None:
    s = scheduler(4, {1: 5, 2: 5}, window=2)
    reqs = s.next_requests(0.0)
    liar = reqs[0]
    assert s.chunk_received(liar.request_id, b"garbage", 1.0, paid=7) is Outcome.WRONG_BYTES
    assert s.is_banned(liar.host_id)
    cancelled = s.cancelled()
    assert {r.host_id for r in cancelled} == {liar.host_id}
    assert s.cancelled() == []
    # the cancelled request's bytes, arriving late, are stale
    if cancelled:
        assert s.chunk_received(cancelled[0].request_id, chunk(cancelled[0].index), 1.0) is Outcome.STALE
    honest = [r for r in reqs if r.host_id != liar.host_id]
    for r in honest:
        assert s.chunk_received(r.request_id, chunk(r.index), 1.0) is Outcome.ACCEPTED
    again = s.next_requests(1.0)
    assert {r.index for r in again} == set(range(4)) - {r.index for r in honest}
    assert again and all(r.host_id != liar.host_id for r in again)
    assert s.progress().sats_lost == 7 and s.progress().sats_spent == 0


def test_timeout_moves_request_elsewhere() -> None:
    s = scheduler(1, {1: 1, 2: 2}, window=1, timeout=10.0)
    (first,) = s.next_requests(0.0)
    assert first.host_id == host(1)
    assert s.next_deadline() == 10.0
    assert s.expire(9.0) == []
    assert s.expire(10.0) == [first]
    (second,) = s.next_requests(10.0)
    assert second.host_id == host(2)
    assert s.chunk_received(first.request_id, chunk(0), 11.0) is Outcome.STALE
    assert s.chunk_received(second.request_id, chunk(0), 11.0, paid=3) is Outcome.ACCEPTED
    assert s.done
    p = s.progress()
    assert (p.chunks_done, p.chunks_total, p.bytes_done, p.sats_spent) == (1, 1, len(chunk(0)), 3)


def test_repeated_failures_drop_host() -> None:
    s = scheduler(MAX_HOST_FAILURES + 2, {1: 1}, window=MAX_HOST_FAILURES + 2)
    reqs = s.next_requests(0.0)
    for r in reqs[:MAX_HOST_FAILURES]:
        s.request_failed(r.request_id)
    assert s.next_requests(1.0) == []
    s.add_host(host(2), 1)
    for i in range(MAX_HOST_FAILURES + 2):
        s.add_candidates(i, [host(2)])
    assert all(r.host_id == host(2) for r in s.next_requests(1.0))


def test_misses_do_not_drop_a_host() -> None:
    # A NOT_FOUND answer for chunks the host was wrongly guessed to hold (specs/network.md §4 Outcomes):
    # it stays a source for the chunk it does hold.  The devnet test of a dead replica and a dead
    # uploader lost its last holder of a chunk this way, about one run in twenty.
    s = scheduler(MAX_HOST_FAILURES + 2, {1: 1}, window=MAX_HOST_FAILURES + 2)
    reqs = s.next_requests(0.0)
    for r in reqs[:MAX_HOST_FAILURES + 1]:
        s.request_failed(r.request_id, missing=True)
    held = reqs[MAX_HOST_FAILURES + 1]
    assert s.chunk_received(held.request_id, chunk(held.index), 1.0) is Outcome.ACCEPTED
    s.add_host(host(2), 1)
    for r in reqs[:MAX_HOST_FAILURES + 1]:
        s.add_candidates(r.index, [host(2)])
    asked = s.next_requests(2.0)  # the missed chunks go to the other host; host 1 is still usable
    assert {r.host_id for r in asked} == {host(2)} and len(asked) == MAX_HOST_FAILURES + 1
    s.add_chunk(MAX_HOST_FAILURES + 2, addr(MAX_HOST_FAILURES + 2), [host(1)])
    assert [r.host_id for r in s.next_requests(3.0)] == [host(1)]


def test_host_failed_returns_its_requests() -> None:
    s = scheduler(4, {1: 1, 2: 1}, window=2)
    reqs = s.next_requests(0.0)
    gone = s.host_failed(host(1))
    assert gone and {r.host_id for r in gone} == {host(1)}
    assert s.progress().in_flight == len(reqs) - len(gone)
    assert all(r.host_id == host(2) for r in s.next_requests(0.0))


def test_success_resets_failure_count() -> None:
    s = scheduler(2 * MAX_HOST_FAILURES, {1: 1}, window=1)
    plan = ["fail"] * (MAX_HOST_FAILURES - 1) + ["ok"] + ["fail"] * (MAX_HOST_FAILURES - 1) + ["ok"]
    for step in plan:
        (r,) = s.next_requests(0.0)
        if step == "ok":
            assert s.chunk_received(r.request_id, chunk(r.index), 0.0) is Outcome.ACCEPTED
        else:
            s.request_failed(r.request_id)
            assert r.index not in s.stuck()  # the only candidate failed: a new round asks it again
    assert s.progress().chunks_done == 2


def test_a_chunk_gets_bounded_rounds_over_its_candidates() -> None:
    s = scheduler(1, {1: 1, 2: 1}, window=1)
    asked = []
    while reqs := s.next_requests(0.0):
        for r in reqs:
            asked.append(r.host_id)
            s.request_failed(r.request_id)
    # each round asks each candidate once, never the same one twice in a round
    assert len(asked) == 2 * MAX_CHUNK_ROUNDS
    assert all(set(asked[i:i + 2]) == {host(1), host(2)} for i in range(0, len(asked), 2))
    assert s.stuck() == [0]


def test_input_validation() -> None:
    with pytest.raises(FetchError):
        FetchScheduler(max_price_per_mib=-1)
    with pytest.raises(FetchError):
        FetchScheduler(max_price_per_mib=1, window=0)
    s = FetchScheduler(max_price_per_mib=1)
    with pytest.raises(FetchError):
        s.add_host(b"x", 1)
    with pytest.raises(FetchError):
        s.add_chunk(0, addr(0), [host(9)])
    s.add_chunk(1, addr(1))
    with pytest.raises(FetchError):
        s.add_chunk(1, addr(1))
    with pytest.raises(FetchError):
        s.add_chunk(2, b"short")


def test_wrong_bytes_reported_by_caller() -> None:
    s = scheduler(2, {1: 1, 2: 1}, window=1)
    a, b = s.next_requests(0.0)
    assert s.wrong_bytes(a.request_id, paid=4) is Outcome.WRONG_BYTES
    assert s.is_banned(a.host_id) and not s.is_banned(b.host_id)
    assert s.wrong_bytes(a.request_id, paid=1) is Outcome.STALE
    assert s.progress().sats_lost == 5
    assert s.chunk_received(b.request_id, chunk(b.index), 1.0) is Outcome.ACCEPTED
    (c,) = s.next_requests(1.0)
    assert c.host_id == b.host_id and c.index == a.index


def test_verified_bytes_are_not_hashed_again() -> None:
    s = scheduler(2, {1: 1}, window=2)
    a, b = s.next_requests(0.0)
    # the caller vouches for the bytes (its transport checked the hash): taken as they are
    assert s.chunk_received(a.request_id, chunk(a.index), 1.0, verified=True) is Outcome.ACCEPTED
    # without the flag the scheduler checks them itself
    assert s.chunk_received(b.request_id, b"not it", 1.0) is Outcome.WRONG_BYTES


def test_the_default_window_is_never_below_a_paid_window() -> None:
    # A paying fetch's requests to one host are held by the host's paid window (specs/payments.md):
    # the scheduler's own default per host must not be the tighter bound (issue 22: 1 host went from
    # 183-193 to 211-218 MiB/s when it was raised from 8 to 16, under mu node's default terms).
    from protocol.fetch import DEFAULT_WINDOW
    from protocol.payments.accounting import MAX_PAID_WINDOW

    assert DEFAULT_WINDOW >= MAX_PAID_WINDOW
