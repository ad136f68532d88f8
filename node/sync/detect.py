"""Local change detection: events, debounced, looked at twice, compared with the scan index (specs/sync.md §Change detection).

Filesystem events (``watch.open_watcher`` feeds them into an
``EventQueue``) say where to look; a periodic full rescan is the safety net
for whatever the events missed (an overflowing kernel queue, a network
filesystem, changes made while the node was down).  Paths are looked at
twice, ``SETTLE_SECONDS`` apart: a file whose size or mtime moved in between
is still being written and waits for a later round, unless it has been
moving for ``RESTLESS_SECONDS``: such a file (a log, a database) never
settles, so it is reported as it is, marked ``restless``, and the round
takes it if it reads the same before and after.  What differs from the
scan index is reported as ``LocalChange``s; the caller turns them into
``protocol.sync.record_local_change`` calls.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import trio

from protocol.sync import EntryKind

from .ignore import IGNORE_FILE, IgnoreRules
from .scan import ScanRecord, covered, scan_tree

# Quiet time after the last event before the paths are looked at: an editor's
# save (write temp, rename, chmod) arrives as one change, not three.
DEBOUNCE_SECONDS = 1.0
# A folder that never goes quiet is still looked at this often.
MAX_DEBOUNCE_SECONDS = 10.0
# Time between the two looks that must agree before a change is reported.
SETTLE_SECONDS = 1.0
# A file seen moving at every look for this long is reported anyway, at most
# once per this period while it keeps moving (specs/sync.md §8, restless files).
RESTLESS_SECONDS = 30.0
# Period of the full rescan that catches what events missed.
RESCAN_SECONDS = 60.0
# Most distinct paths waiting to be looked at; past it the queue gives up on
# single paths and asks for one full rescan instead (bounded memory).
MAX_PENDING_PATHS = 10_000

log = logging.getLogger("mu.sync")


@dataclass(frozen=True, slots=True)
class LocalChange:
    """``path`` now looks like ``record``; None: it is gone.

    ``restless``: a file that has not stopped changing for
    ``RESTLESS_SECONDS``; ``record`` is the last look's, and the round
    takes the file as it finds it when it reads it, if it does not change
    during the read (specs/sync.md §8).
    """

    path: str
    record: ScanRecord | None
    restless: bool = False


class EventQueue:
    """Paths that events named since the last look, or "look at everything". Trio-side, bounded."""

    def __init__(self) -> None:
        self._paths: set[str] = set()
        self._full = False
        self._changed = trio.Event()

    def note(self, path: str | None) -> None:
        """Something happened at ``path`` (None: anywhere; rescan the folder)."""
        if path is None or len(self._paths) >= MAX_PENDING_PATHS:
            self._full = True
            self._paths.clear()
        elif not self._full:
            self._paths.add(path)
        self._changed.set()

    @property
    def empty(self) -> bool:
        return not self._full and not self._paths

    def __len__(self) -> int:
        """Paths waiting to be looked at; a full rescan asked for counts as one."""
        return len(self._paths) + self._full

    async def wait(self) -> None:
        """Return once something is queued."""
        while self.empty:
            self._changed = trio.Event()
            await self._changed.wait()

    async def wait_quiet(self, quiet: float, longest: float) -> None:
        """Return once no event came for ``quiet`` seconds, or after ``longest`` seconds at most."""
        with trio.move_on_after(longest):
            while True:
                self._changed = trio.Event()
                with trio.move_on_after(quiet) as scope:
                    await self._changed.wait()
                if scope.cancelled_caught:
                    return

    def take(self) -> tuple[set[str], bool]:
        """The queued paths and whether a full rescan was asked for; empties the queue."""
        paths, full = self._paths, self._full
        self._paths, self._full = set(), False
        return paths, full


class ChangeDetector:
    """Watches one synced folder's tree against its scan index and reports what changed.

    ``index`` is the scan index as last reported (or as a previous run
    left it): path -> record.  The detector owns it from then on; sync's
    own writes are told to it through ``acknowledge`` so they are not
    reported back as local changes.
    """

    def __init__(self, root: Path, *, index: Mapping[str, ScanRecord] | None = None) -> None:
        self.root = root
        self.queue = EventQueue()
        self.rules = IgnoreRules.load(root)
        self._index: dict[str, ScanRecord] = dict(index or {})
        self.rounds = 0  # looks completed; tests and status read it
        self._looking = 0  # paths taken by the look under way until its batch is handed on (a full look asked for: 1)
        self._looked = trio.Event()  # set (and replaced) each time a look completes
        # Paths on disk that sync cannot carry (specs/sync.md §Paths), for status.
        self.unsyncable: set[str] = set()
        # Paths the last looks could not look at (permission denied), with the reason, for status.
        self.unreadable: dict[str, str] = {}
        # Files seen moving at every look since then (trio time), or since they were last reported
        # restless; bounded by MAX_PENDING_PATHS.
        self._moving_since: dict[str, float] = {}

    @property
    def index(self) -> Mapping[str, ScanRecord]:
        return dict(self._index)

    @property
    def pending(self) -> int:
        """Paths noted and not yet reported: queued, or under the look whose batch is not handed on yet."""
        return len(self.queue) + self._looking

    def acknowledge(self, path: str, record: ScanRecord | None) -> None:
        """Sync itself made ``path`` look like ``record`` (None: removed it): not a local change."""
        if record is None:
            self._index.pop(path, None)
        else:
            self._index[path] = record

    async def wait_rounds(self, count: int) -> None:
        """Return once ``count`` looks have completed (a look's batch may still be on its way)."""
        while self.rounds < count:
            await self._looked.wait()

    async def serve(self, changes: trio.abc.SendChannel[tuple[LocalChange, ...]], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report batches of changes on ``changes`` until cancelled.

        The first round is a full rescan: it reports what changed while
        nobody watched.  Raises ScanError (from ``scan_tree``) if the folder
        goes away, and IgnoreFileError if ``.muignore`` becomes unreadable.
        """
        task_status.started()
        paths: set[str] = set()
        full = asked = True  # asked: a full look something called for (the start), not the periodic one
        next_rescan = trio.current_time()
        while True:
            if not full:
                with trio.move_on_at(next_rescan):
                    await self.queue.wait()
                if not self.queue.empty:
                    await self.queue.wait_quiet(DEBOUNCE_SECONDS, MAX_DEBOUNCE_SECONDS)
                paths, asked = self.queue.take()
                if IGNORE_FILE in paths:
                    self.rules = IgnoreRules.load(self.root)
                    asked = True
                full = asked or trio.current_time() >= next_rescan
            if full:
                next_rescan = trio.current_time() + RESCAN_SECONDS
            # The periodic rescan is a safety net, not a change seen: it leaves pending as it was.
            self._looking = 1 if asked else len(paths)
            try:
                found, moving, restless, unreadable = await self._settled_look(None if full else paths)
                self._note_unreadable(unreadable, None if full else paths)
                self.rounds += 1
                self._looked.set()
                self._looked = trio.Event()
                batch = self._compare(found, moving, None if full else paths, unreadable, restless)
                if batch:
                    await changes.send(batch)
            finally:
                self._looking = 0
            full = False

    async def _look(self, paths: set[str] | None) -> tuple[dict[str, ScanRecord], dict[str, str]]:
        """The records found, and the paths that could not be looked at (path -> reason)."""
        unsyncable: set[str] = set()
        unreadable: dict[str, str] = {}

        def look_each() -> dict[str, ScanRecord]:
            if paths is None:
                return scan_tree(self.root, self.rules, unsyncable=unsyncable, unreadable=unreadable)
            found: dict[str, ScanRecord] = {}
            for path in sorted(paths):
                found.update(scan_tree(self.root, self.rules, under=path, unsyncable=unsyncable,
                                       unreadable=unreadable))
            return found

        found = await trio.to_thread.run_sync(look_each)
        for path in sorted(unsyncable - self.unsyncable):
            log.warning("not synced: %r is not a path sync can carry (specs/sync.md §Paths)", path)
        self.unsyncable = unsyncable if paths is None else self.unsyncable | unsyncable
        return found, unreadable

    def _note_unreadable(self, unreadable: dict[str, str], paths: set[str] | None) -> None:
        """Keep the unreadable paths for status: this look's, and the earlier ones it did not look at."""
        if paths is not None:
            looked = dict.fromkeys(paths, "")
            unreadable = {path: reason for path, reason in self.unreadable.items()
                          if not covered(path, looked)} | unreadable
        for path in sorted(unreadable.keys() - self.unreadable.keys()):
            log.warning("not synced until it can be read: %r (%s); what is under it is kept as it was",
                        path, unreadable[path])
        self.unreadable = unreadable

    async def _settled_look(self, paths: set[str] | None
                            ) -> tuple[dict[str, ScanRecord], set[str], set[str], dict[str, str]]:
        """Two looks ``SETTLE_SECONDS`` apart: the second look's settled records, the paths still moving,
        the restless files among the records, and the paths the second look could not look at.

        A path still moving (size, mtime or presence changed between the
        looks) is queued again and left out of this round, unless it is a
        file (the same inode in both looks) that has been moving at every
        look for ``RESTLESS_SECONDS``: that one is kept, as restless, and
        its clock starts again.
        """
        first, _ = await self._look(paths)
        await trio.sleep(SETTLE_SECONDS)
        second, unreadable = await self._look(paths)
        moving = {path for path in first.keys() | second.keys()
                  if (record := first.get(path)) is None or not record.settled_with(second.get(path))}
        now = trio.current_time()
        if paths is None:
            self._moving_since = {path: since for path, since in self._moving_since.items() if path in moving}
        else:
            for path in first.keys() | second.keys():
                if path not in moving:
                    self._moving_since.pop(path, None)
        if len(self._moving_since) + len(moving) > MAX_PENDING_PATHS:
            self._moving_since.clear()  # bounded: such files wait RESTLESS_SECONDS more
        restless: set[str] = set()
        for path in sorted(moving):
            self.queue.note(path)
            since = self._moving_since.setdefault(path, now)
            before, after = first.get(path), second.get(path)
            if (now - since >= RESTLESS_SECONDS and before is not None and after is not None
                    and before.kind is EntryKind.FILE and after.kind is EntryKind.FILE
                    and before.inode == after.inode):
                self._moving_since[path] = now
                restless.add(path)
            else:
                second.pop(path, None)
        return second, moving - restless, restless, unreadable

    def _in_scope(self, paths: set[str] | None) -> list[str]:
        """The index's paths this round looked at: all, or the named ones and everything under them."""
        if paths is None:
            return list(self._index)
        ordered = sorted(self._index)
        inside = []
        for path in paths:
            if path in self._index:
                inside.append(path)
            start = bisect_left(ordered, path + "/")
            for known in ordered[start:]:
                if not known.startswith(path + "/"):
                    break
                inside.append(known)
        return inside

    def _compare(self, found: dict[str, ScanRecord], moving: set[str], paths: set[str] | None,
                 unreadable: Mapping[str, str], restless: Collection[str] = ()) -> tuple[LocalChange, ...]:
        changed: dict[str, ScanRecord | None] = {}
        for path in self._in_scope(paths):
            if path in moving or (path not in found and covered(path, unreadable)):
                continue  # still moving, or under a directory that could not be read: unknown, not gone
            if self.rules.ignores(path, is_dir=self._index[path].kind is EntryKind.DIRECTORY):
                # Newly ignored: sync stops looking; it is not a delete (specs/sync.md §Ignored paths).
                del self._index[path]
            elif path not in found:
                changed[path] = None
        for path, record in found.items():
            if self._index.get(path) != record:
                changed[path] = record
        for path, now in changed.items():
            self.acknowledge(path, now)
        return tuple(LocalChange(path, changed[path], path in restless) for path in sorted(changed))
