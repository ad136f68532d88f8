"""The upkeep timer's schedule and decisions (specs/erasure.md §7.5 The upkeep timer), on trio's autojump
clock with a stand-in auditor: exponential gaps around period / shares, one uniform share per audit, a
repair right after a failed audit, renewal once per period when a file is due."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from node.files.audit import ErasureBook, FileRecord, ShareAudit
from node.files.upkeep import UpkeepConfig, UpkeepTimer
from protocol.erasure import AuditError, audit_delay, pick_share

MAP, OTHER = b"\x01" * 32, b"\x02" * 32
HOSTS = tuple(bytes([h]) * 32 for h in range(10, 18))


def draws(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [struct.pack(">Q", rng.getrandbits(64)) for _ in range(20_000)]


def test_audit_delays_are_exponential_around_the_period_over_the_shares() -> None:
    delays = [audit_delay(80.0, 8, b) for b in draws(1)]
    mean = sum(delays) / len(delays)
    assert 9.7 < mean < 10.3  # 80 s / 8 shares
    assert 0.60 < sum(1 for d in delays if d < 10.0) / len(delays) < 0.66  # 1 - 1/e of them below the mean
    assert audit_delay(80.0, 0, b"\xff" * 8) == 0.0  # the extreme draws stay finite and non-negative
    assert audit_delay(80.0, 0, bytes(8)) == pytest.approx(80.0 * 64 * math.log(2))
    with pytest.raises(AuditError):
        audit_delay(0.0, 8, bytes(8))
    with pytest.raises(AuditError):
        audit_delay(1.0, 8, bytes(7))


def test_shares_are_picked_uniformly() -> None:
    counts = [0] * 8
    for b in draws(2):
        counts[pick_share(8, b)] += 1
    assert all(2300 < c < 2700 for c in counts)
    with pytest.raises(AuditError):
        pick_share(0, bytes(8))


@dataclass
class StandInAuditor:
    """What the timer asks of an :class:`node.files.audit.Auditor`: shares, one audit, the book."""

    book: ErasureBook
    failing: set[bytes] = field(default_factory=set)
    audited: list[tuple[bytes, int, int]] = field(default_factory=list)
    want: int = 0  # ``enough`` is set once this many audits ran
    enough: trio.Event = field(default_factory=trio.Event)

    def audited_shares(self) -> list[tuple[bytes, int, int]]:
        return [(MAP, 0, i) for i in range(8)]

    async def audit_one(self, map_address: bytes, stripe: int, share: int) -> ShareAudit:
        self.audited.append((map_address, stripe, share))
        if len(self.audited) >= self.want:
            self.enough.set()
        host = HOSTS[share]
        passed = host not in self.failing
        return ShareAudit(stripe=stripe, share=share, host=host, passed=passed, reason="" if passed else "gone",
                          score=100 if passed else 40, sats=7 if passed else 0)


async def test_a_failed_audit_repairs_at_once_and_a_due_file_is_renewed_once_per_period(tmp_path: Path,
                                                                                         autojump_clock: trio.testing.MockClock) -> None:
    book = ErasureBook(tmp_path)
    now = [1_000_000.0]
    book.save(FileRecord(map_address=MAP, root=b"\x03" * 32, hosts=(HOSTS,), retained_until=int(now[0]) + 10**7))
    book.save(FileRecord(map_address=OTHER, root=b"\x04" * 32, hosts=(HOSTS,), retained_until=int(now[0]) + 60))
    auditor = StandInAuditor(book, failing={HOSTS[3]}, want=200)
    rng = random.Random(19)
    repaired: list[bytes] = []
    renewed: list[tuple[int, int, int]] = []

    async def repair(map_address: bytes) -> None:
        repaired.append(map_address)

    async def renew(at: int, budget: int, within: int) -> None:
        renewed.append((at, budget, within))

    timer = UpkeepTimer(auditor, UpkeepConfig(audit_period=80.0, max_spend_per_month=500, renew_ahead=3600),
                        repair=repair, renew=renew, random_bytes=rng.randbytes, wall_clock=lambda: now[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.serve)
        start = trio.current_time()
        # An event, not a polling sleep: the timer hops to a thread each tick, and a sleeping poller
        # would let the autojump clock run ahead while that thread works.
        await auditor.enough.wait()
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert 0.7 < elapsed / (200 * 10.0) < 1.3  # 200 audits at a mean gap of 80 s / 8 shares
    failed = sum(1 for _, _, share in auditor.audited if share == 3)
    assert 10 < failed < 45  # one share in 8 picked
    assert repaired.count(MAP) >= failed  # every failed audit repaired the file at once
    # The wall clock did not move: one periodic look, which renewed (OTHER is due) within the budget.
    assert renewed == [(int(now[0]), 500, 3600)]


def test_a_period_that_is_not_positive_is_refused(tmp_path: Path) -> None:
    async def nothing(map_address: bytes) -> None:
        return None

    with pytest.raises(ValueError):
        UpkeepTimer(StandInAuditor(ErasureBook(tmp_path)), UpkeepConfig(audit_period=0.0),  # type: ignore[arg-type]
                    repair=nothing, renew=None)


@dataclass
class LateAuditor(StandInAuditor):
    """Owns no file until ``present`` is set (a node started before its first k-of-n add)."""

    present: bool = False

    def audited_shares(self) -> list[tuple[bytes, int, int]]:
        return super().audited_shares() if self.present else []


async def wait_after(auditor: LateAuditor, change: Callable[[UpkeepTimer], Awaitable[None]],
                     repair: Callable[[bytes], Awaitable[object]]) -> float:
    """Seconds from ``change`` (made once the timer drew its first wait, with no share) to the next audit."""
    # The first wait, drawn with no share, is the longest the draw allows: 64 ln 2 periods (about 44).
    values = iter([bytes(8)] + [b"\x80" + bytes(7)] * 10)
    drawn = trio.Event()

    def draw(n: int) -> bytes:
        drawn.set()
        return next(values)

    timer = UpkeepTimer(auditor, UpkeepConfig(audit_period=80.0), repair=repair, renew=None,  # type: ignore[arg-type]
                        random_bytes=draw, wall_clock=lambda: 1_000_000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(timer.serve)
        await drawn.wait()  # the first wait is drawn, with no share
        start = trio.current_time()
        await change(timer)
        await auditor.enough.wait()
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return elapsed


async def test_a_file_added_to_a_node_with_none_is_audited_at_the_rate_of_its_shares(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    auditor = LateAuditor(ErasureBook(tmp_path), want=1)

    async def nothing(map_address: bytes) -> None:
        return None

    async def add(timer: UpkeepTimer) -> None:
        auditor.present = True
        timer.files_changed()

    elapsed = await wait_after(auditor, add, nothing)
    assert elapsed == pytest.approx(math.log(2) * 80.0 / 8)  # drawn again for 8 shares, not the first wait


async def test_a_repair_asked_for_outside_the_schedule_draws_the_wait_again(
        tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """The control API's repair goes through ``repair_now``: the shares it re-placed count again, so the
    wait under way is drawn anew for their number rather than kept from before the repair."""
    auditor = LateAuditor(ErasureBook(tmp_path), want=1)  # every share on a dropped host: none audited
    repaired: list[bytes] = []

    async def repair(map_address: bytes) -> str:
        auditor.present = True  # the round re-placed the shares on live hosts
        repaired.append(map_address)
        return "report"

    async def repair_through_the_api(timer: UpkeepTimer) -> None:
        assert await timer.repair_now(MAP) == "report"

    elapsed = await wait_after(auditor, repair_through_the_api, repair)
    assert repaired == [MAP]
    assert elapsed == pytest.approx(math.log(2) * 80.0 / 8)  # drawn again for the 8 shares
