"""The owner's upkeep timer: audits at random times, repair, renewal (specs/erasure.md §7.5 The upkeep timer).

``UpkeepTimer.serve`` runs inside ``mu node``.  Audits arrive as a Poisson
process (:func:`protocol.erasure.audit_delay`): the gap before each is
exponential with mean ``audit_period / shares``, and each audits one share
picked uniformly among the shares of every file owned here whose host is
not dropped, so each share is audited once per ``audit_period`` on average
and a host cannot tell when its next audit comes.  When files are added
(``files_changed``) the wait under way is drawn again for the new share
count: exponential gaps are memoryless, so the schedule stays a Poisson
process at the current rate, and a node that had no file (a wait of a
whole period on average) does not leave its first one unaudited that long.
A failed audit leaves its stripe below the repair threshold (`n`, specs/erasure.md §8 Repair): the
file gets an upkeep round at once (every share audited, the failed ones
re-placed).  Once per audit period the timer also repairs files with a
share that has no live host, and renews the files whose paid retention ends
within ``renew_ahead`` (specs/erasure.md §9 Renewal), within the monthly
budget; those over it are logged at risk by the renewal itself.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from node.files.audit import Auditor
from protocol.erasure import RENEW_AHEAD, SCHEDULE_RANDOM_SIZE, audit_delay, pick_share

log = logging.getLogger("mu.upkeep")

DEFAULT_AUDIT_PERIOD = 86_400.0  # seconds in which each share is audited once on average
# A node stopping waits this long at most for an audit under way: cut between the audit's payment record and
# its delivery, our ledger would hold a payment the host never saw (specs/payments.md §After a crash).
AUDIT_SHUTDOWN_GRACE = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UpkeepConfig:
    audit_period: float = DEFAULT_AUDIT_PERIOD
    max_spend_per_month: int = 0  # sats for renewals; 0: nothing is renewed, every file due is at risk
    renew_ahead: int = RENEW_AHEAD


class UpkeepTimer:
    """Audits, repairs and renews the k-of-n files an :class:`Auditor` keeps, on its own schedule.

    ``repair`` runs one upkeep round on a file (its map address);
    ``renew`` one renewal round at a unix time, or None on a node that does
    not pay (nothing to renew with).
    """

    def __init__(self, auditor: Auditor, config: UpkeepConfig, *, repair: Callable[[bytes], Awaitable[object]],
                 renew: Callable[[int, int, int], Awaitable[object]] | None,
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if config.audit_period <= 0:
            raise ValueError("the audit period is a positive number of seconds")
        self.auditor = auditor
        self.config = config
        self.repair = repair
        self.renew = renew
        self.random_bytes = random_bytes
        self.wall_clock = wall_clock
        self.audits = 0  # audits run (for status and tests)
        self._next_round = 0.0  # unix time of the next repair-and-renewal look
        self._changed = trio.Event()  # set by ``files_changed`` during a wait for the next audit

    def files_changed(self) -> None:
        """The files owned here changed (one was added): draw the wait for the next audit again."""
        self._changed.set()

    async def repair_now(self, map_address: bytes) -> object:
        """An upkeep round of one file asked for outside the schedule (the control API's repair).

        The shares it re-places on live hosts count again among those
        audited, so the wait under way is drawn again for their number, as
        after an add (``files_changed``).  Returns what ``repair`` returns.
        """
        try:
            return await self.repair(map_address)
        finally:
            self.files_changed()

    def status(self) -> dict[str, object]:
        return {"audit_period": self.config.audit_period, "audits": self.audits}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; a tick that fails is logged and the schedule goes on."""
        task_status.started()
        while True:
            self._changed = changed = trio.Event()
            shares = await trio.to_thread.run_sync(self.auditor.audited_shares)
            with trio.move_on_after(audit_delay(self.config.audit_period, len(shares),
                                                self.random_bytes(SCHEDULE_RANDOM_SIZE))) as wait:  # the schedule itself
                await changed.wait()
            if not wait.cancelled_caught:
                continue  # the shares changed first: a new wait at their rate
            try:
                await self.tick()
            except Exception:  # a lost chunk, a wallet without coins...: the next tick tries again
                log.exception("upkeep tick failed")

    async def tick(self) -> None:
        """One audit of a random share (and its file's repair if it failed); the periodic look when due."""
        shares = await trio.to_thread.run_sync(self.auditor.audited_shares)
        if shares:
            map_address, stripe, share = shares[pick_share(len(shares), self.random_bytes(SCHEDULE_RANDOM_SIZE))]
            with trio.CancelScope(shield=True), trio.fail_after(AUDIT_SHUTDOWN_GRACE):
                audit = await self.auditor.audit_one(map_address, stripe, share)
            self.audits += 1
            if not audit.passed:
                log.info("stripe %d of %s is below its threshold: repairing the file", stripe, map_address.hex())
                await self.repair(map_address)
        now = self.wall_clock()
        if now >= self._next_round:
            self._next_round = now + self.config.audit_period
            await self._periodic(int(now))

    async def _periodic(self, now: int) -> None:
        """Repair files with a share on no live host; renew the files due."""
        book = self.auditor.book
        dropped = book.dropped()
        due = False
        for map_address in book.files():
            record = book.load(map_address)
            if record is None:
                continue
            if record.missing(dropped):
                await self.repair(map_address)
            due = due or record.retained_until - now <= self.config.renew_ahead
        if due and self.renew is not None:
            await self.renew(now, self.config.max_spend_per_month, self.config.renew_ahead)
