"""Must hold (issue 21): kill -9 of either side at random points during reciprocal traffic, 20 times; afterwards
both sides' views agree (specs/payments.md §Service balance, "After a crash").

Two node processes (``tests.helpers.balance_child``: the library code a
node uses, real sockets, real SQLite) PUT chunks to each other in balance
mode, with a channel each way for the imbalance.  One of them, chosen at
random, is killed with SIGKILL a random number of answers in, and started
again, 20 times.  During the run the recorded views never differ by more
than the documented bound; after it both start again, each does a few
more PUTs (the session's first acknowledgements resynchronise them) and
their recorded views agree to the sat.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from node.ledger import Ledger
from protocol.payments.balance import PeerBalance, view_gap_bound
from tests.helpers.balance import (CHUNK_SIZE, PRICE_PER_MIB_PUT, TEST_TERMS, open_balance_peer, open_channel,
                                   peer_identity)
from tests.helpers.chain import REPO_ROOT
from tests.helpers.exchange import payer_lines

NAMES = ("a", "b")
KILLS = 20
# PUTs that move the view by more than the disconnect threshold plus the payment threshold.
FINAL_PUTS = (TEST_TERMS.disconnect_threshold + TEST_TERMS.payment_threshold) // (
    PRICE_PER_MIB_PUT * CHUNK_SIZE // (1 << 20)) + 1
OFFER = 10**9


async def start(root: Path, name: str, count: int) -> tuple[trio.Process, AsyncIterator[list[str]]]:
    other = NAMES[1] if name == NAMES[0] else NAMES[0]
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.helpers.balance_child", str(root), name, other, str(count)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(REPO_ROOT))
    return process, payer_lines(process).__aiter__()


async def lines_until(lines: AsyncIterator[list[str]], line: list[str], times: int = 1) -> None:
    """Read the child's lines until ``line`` (its first word, for ``put``) has come ``times`` times."""
    seen = 0
    async for words in lines:
        seen += words[:len(line)] == line
        if seen == times:
            return
    raise AssertionError("the child ended first")


def recorded(root: Path, name: str) -> PeerBalance:
    other = NAMES[1] if name == NAMES[0] else NAMES[0]
    with Ledger.open(root / name / "ledger.sqlite3") as ledger:
        return ledger.balance(peer_identity(other).node_id.hex())


@pytest.mark.slow
async def test_views_agree_after_20_kills_of_either_side(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    print(f"random kill points: seed {seed}")  # shown with a failure, to replay it
    rng = random.Random(seed)
    async with open_balance_peer(tmp_path / "a", "a", offer=OFFER) as a, \
            open_balance_peer(tmp_path / "b", "b", offer=OFFER) as b:
        open_channel(a, b)
        open_channel(b, a)
    children = {name: await start(tmp_path, name, -1) for name in NAMES}
    try:
        with trio.fail_after(600):
            for _ in range(KILLS):
                victim = rng.choice(NAMES)
                process, lines = children[victim]
                await lines_until(lines, ["put"], rng.randint(1, 6))
                process.send_signal(signal.SIGKILL)
                await process.wait()
                # Mid-run, the recorded views differ by at most what was in flight (and lazily written).
                view_a, view_b = recorded(tmp_path, "a"), recorded(tmp_path, "b")
                assert abs(view_a.net + view_b.net) <= view_gap_bound(TEST_TERMS)
                children[victim] = await start(tmp_path, victim, -1)
            for process, _ in children.values():
                process.send_signal(signal.SIGKILL)
                await process.wait()
            # Both start again: the session's first acknowledgements resynchronise them.  The
            # first puts enough to owe the other a payment whatever the kills left (the view
            # is within the disconnect threshold), so the end checks always cover one.
            children = {name: await start(tmp_path, name, FINAL_PUTS if name == NAMES[0] else 3) for name in NAMES}
            for _, lines in children.values():
                await lines_until(lines, ["done"])
            for process, _ in children.values():
                assert process.stdin is not None
                await process.stdin.aclose()
                assert await process.wait() == 0
    finally:
        for process, _ in children.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
    view_a, view_b = recorded(tmp_path, "a"), recorded(tmp_path, "b")
    assert (view_a.given, view_a.taken) == (view_b.taken, view_b.given)
    assert (view_a.paid_out, view_a.paid_in) == (view_b.paid_in, view_b.paid_out)
    assert view_a.net == -view_b.net and abs(view_a.net) <= TEST_TERMS.disconnect_threshold
    assert view_a.given > 0 and view_b.given > 0
    # The channel payments that settled the imbalances: what one ledger says it paid, the other says it earned.
    reports = {}
    for name in NAMES:
        with Ledger.open(tmp_path / name / "ledger.sqlite3") as ledger:
            reports[peer_identity(name).node_id.hex()] = ledger.earnings()
    for payer, report in reports.items():
        for peer, row in report["per_peer"].items():
            assert reports[peer]["per_peer"].get(payer, {}).get("earned", 0) == row["spent"], (payer, peer)
    assert sum(r["spent"] for r in reports.values()) > 0  # some imbalance was settled through a channel
