"""Group commit for the ledger's single writer connection.

Every write (a payment, a channel update, a settlement) is a function of the
connection.  Callers on any thread queue their function and block until the
transaction holding it has committed: the first waiter to find no commit in
progress becomes the leader, runs every queued function (up to
``MAX_GROUP_COMMIT``) in one transaction with a SAVEPOINT each, commits once
(one fsync under ``synchronous=FULL``) and wakes the others.  A function that
raises rolls back only its own savepoint; its caller gets the exception.
(specs/payments.md §Ledger, "Durability".)
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

# Bound on the writes folded into one transaction; also bounds the queue a
# leader drains at once (specs/payments.md §Definitions and defaults, §Ledger "Durability").
MAX_GROUP_COMMIT = 256

Write = Callable[[sqlite3.Connection], Any]


class GroupCommitter:
    """Serialises writes on one connection and commits them in groups."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._cv = threading.Condition()
        self._queue: deque[tuple[int, Write]] = deque()
        self._results: dict[int, tuple[bool, Any]] = {}
        self._next_seq = 0
        self._leader = False
        self._closed = False
        self.commits = 0  # number of transactions committed (for tests/benchmarks)

    def submit(self, write: Write) -> Any:
        """Run ``write`` in a committed transaction; return its result.

        Raises:
            whatever ``write`` raised (nothing of it is committed), or
            sqlite3.Error when the commit itself failed (nothing of the
            group is committed), or RuntimeError once closed.
        """
        with self._cv:
            if self._closed:
                raise RuntimeError("ledger is closed")
            seq = self._next_seq
            self._next_seq += 1
            self._queue.append((seq, write))
            while seq not in self._results:
                if self._leader:
                    self._cv.wait()
                    continue
                # Become the leader: run what is queued (ours included, or
                # ours comes in a later round when the queue was over
                # MAX_GROUP_COMMIT) with the lock released.
                self._leader = True
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_GROUP_COMMIT))]
                outcomes: dict[int, tuple[bool, Any]] = {}
                self._cv.release()
                try:
                    outcomes = self._run(batch)
                finally:
                    self._cv.acquire()
                    self._results.update(outcomes)
                    for queued, _ in batch:  # an interrupted commit fails the group
                        self._results.setdefault(queued, (False, RuntimeError("ledger commit interrupted")))
                    self._leader = False
                    self.commits += 1
                    self._cv.notify_all()
            return self._unwrap(self._results.pop(seq))

    def close(self) -> None:
        """Refuse further writes (queued ones still complete)."""
        with self._cv:
            self._closed = True

    def _run(self, batch: list[tuple[int, Write]]) -> dict[int, tuple[bool, Any]]:
        conn = self._conn
        outcomes: dict[int, tuple[bool, Any]] = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for seq, write in batch:
                conn.execute("SAVEPOINT w")
                try:
                    outcomes[seq] = (True, write(conn))
                    conn.execute("RELEASE w")
                except Exception as exc:  # the caller gets it back, others go on
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    outcomes[seq] = (False, exc)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return {seq: (False, exc) for seq, _ in batch}
        return outcomes

    @staticmethod
    def _unwrap(outcome: tuple[bool, Any]) -> Any:
        ok, value = outcome
        if ok:
            return value
        raise value
