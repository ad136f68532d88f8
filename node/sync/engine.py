"""One device's sync of one folder through records and hosts (specs/sync.md §14 Devices).

A round: record the local changes (the detector's, or a scan of the whole
folder) in this device's state (specs/sync.md §6, §15); a writing device stores that state as a file under the
folder's chunk secret, uploads it and publishes its own record (§14.2),
and makes sure the roster names it (§14.3); then the records of the other
devices the roster (or a notify) names are resolved, checked (certificate,
device) and merged (``protocol.sync.merge``), and the plan applied with
``node.sync.apply``.  Nothing here needs another device online: records
and chunks come from the DHT and the hosts.

The network is two small interfaces, so the round is the same on a node
(the DHT and paid hosts) and in tests (in-memory records and hosts).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from node.folders.history import read_bytes
from node.folders.snapshot import SMALL_FILE_BYTES, SMALL_FILE_THREADS, store_bytes, store_file
from node.store import ChunkStore
from protocol.chunks import FileDecoder, Link
from protocol.folders import ReadCap, WriteCap
from protocol.identity import Identity
from protocol.kademlia import MutableRecord, sign_mutable
from protocol.sync import (
    MAX_STATE_BYTES,
    DeviceRecord,
    EntryKind,
    FileEntry,
    FolderState,
    MergePlan,
    Move,
    Observation,
    SyncError,
    certify_device,
    decode_device_record,
    decode_roster,
    encode_roster,
    merge,
    parse_device_state,
    record_local_changes,
)

from .apply import Applied, delete_path, make_directory, move_path, set_metadata, write_file, write_symlink
from .detect import LocalChange
from .ignore import IgnoreRules
from .scan import ScanRecord, covered, look, scan_tree

log = logging.getLogger("mu.sync")

# A remote version this disk refused (no space, a name too long...) is tried again this long after.
UNWRITABLE_RETRY_SECONDS = 60.0
DENIED = "it cannot be looked at (permission denied)"

LINK_BYTES = 64  # a file's content reference: root || key (specs/chunks.md Link)
# Files a round reads (stores) at most (specs/sync.md §15 The sync service): a folder of
# 10,000 new files is published in parts, so the other devices fetch one part while this
# one uploads the next, instead of waiting for the whole upload.
ROUND_FILES = 1000


class Records(Protocol):
    """Signed mutable records (specs/dht.md §7.3): the node's DHT, or a test's dictionary."""

    async def resolve_record(self, public_key: bytes) -> MutableRecord | None: ...

    async def publish_record(self, record: MutableRecord) -> int: ...


class Hosts(Protocol):
    """Where chunks live between devices, many files per call (specs/sync.md §15 The sync service).

    ``upload`` sends every chunk of ``links`` and announces this node as the
    provider of ``announce`` alone (the state naming them); ``ensure`` brings
    every chunk of ``links`` here, the providers of ``near`` (the states
    naming them) being the hosts of last resort.  Both return only when every
    file is done, and raise if one cannot be.
    """

    async def upload(self, links: Sequence[Link], *, announce: bytes) -> None: ...

    async def ensure(self, links: Sequence[Link], *, near: Sequence[bytes]) -> None: ...


@dataclass(frozen=True, slots=True)
class RoundReport:
    """What one round did."""

    local_changes: int
    published_seq: int | None  # the sequence number published; None: nothing new (or read-only)
    applied: int  # plan actions carried out on disk
    conflicts: tuple[str, ...]  # conflict copies made by the merge or by a racing local edit
    devices: tuple[str, ...]  # other devices whose state was merged (hex ids)
    refused: tuple[str, ...]  # "device-hex: reason" for records refused whole
    retry: tuple[str, ...] = ()  # paths that changed while read: the detector must look again
    behind: bool = False  # files were left unread (past ROUND_FILES): the next round must scan the whole tree


@dataclass(frozen=True, slots=True)
class PeerDevice:
    """What this device last learned of another device of the folder, from its record."""

    node: bytes | None  # the node it runs on (specs/sync.md §16 Notify), None if it names none
    seq: int  # its record's sequence number last merged
    seen_ns: int  # wall-clock time this device first merged that sequence number


def _content_link(content: bytes) -> Link:
    if len(content) != LINK_BYTES:
        raise SyncError(f"a file's content reference is {LINK_BYTES} bytes")
    return Link(content[:32], content[32:])


def _chunks(store: ChunkStore, link: Link) -> Iterator[bytes]:
    decoder = FileDecoder.from_link(link)
    while (address := decoder.next_address()) is not None:
        yield bytes(decoder.feed(store.get(address, verify=False)))


@dataclass(slots=True)
class FolderSync:
    """The sync of ``root`` as one device of the folder ``cap`` opens (a write cap: a writing device)."""

    root: Path
    cap: WriteCap | ReadCap
    device_seed: bytes
    store: ChunkStore
    records: Records
    hosts: Hosts
    tmp_dir: Path
    wall_clock: Callable[[], int] = time.time_ns
    state: FolderState = field(init=False)
    # path -> (how it looked, its content reference): a file is read again only when it changed.
    seen: dict[str, tuple[ScanRecord, bytes]] = field(default_factory=dict)
    known_devices: set[bytes] = field(default_factory=set)
    published: bytes | None = None  # the serialized state last published
    unsent: dict[bytes, Link] = field(default_factory=dict)  # files stored here, not yet uploaded
    node_id: bytes | None = None  # the node this device runs on, named in its record for notifies
    peers: dict[bytes, PeerDevice] = field(default_factory=dict)  # the other devices, as their records say
    published_seq: int = 0  # this device's record's sequence number last published
    # Paths that could not be read (permission denied) -> the reason, left as the state has them: files that
    # could not be opened (tried again each round), and directories that could not be listed or paths that
    # could not be looked at (the last full scan's, or the detector's as the service passes them).
    unreadable_files: dict[str, str] = field(default_factory=dict)
    unreadable_tree: dict[str, str] = field(default_factory=dict)
    # Paths whose remote version the last round could not apply here -> the reason, and when it was last tried
    # (time.monotonic()): tried again UNWRITABLE_RETRY_SECONDS later.
    unwritable: dict[str, str] = field(default_factory=dict)
    _unwritable_at: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = FolderState.of(self.device)

    @property
    def device(self) -> bytes:
        return Identity(self.device_seed).public_key

    @property
    def unreadable(self) -> dict[str, str]:
        """Every path this device could not read, with the reason."""
        return {**self.unreadable_tree, **self.unreadable_files}

    @property
    def writer(self) -> bool:
        return isinstance(self.cap, WriteCap)

    def _observe(self, detected: Sequence[LocalChange] | None, retry: list[str],
                 unreadable: Mapping[str, str] | None = None) -> tuple[list[tuple[str, Observation | None]], bool]:
        """Store new or changed files; return what differs from the state (blocking).

        And whether files were left unread (past ``ROUND_FILES``).
        ``detected``: the detector's changes (specs/sync.md §8 Change
        detection); None: scan the whole tree instead.  A file that changed
        while it was read is left out and its path added to ``retry``.
        """
        restless: set[str] = set()
        if detected is None:
            tree: dict[str, str] = {}
            found = scan_tree(self.root, IgnoreRules.load(self.root), unreadable=tree)
            # Under a directory that could not be listed, a path is unknown, not gone (specs/sync.md §8).
            gone = [path for path, entry in self.state.items()
                    if not entry.deleted and path not in found and not covered(path, tree)]
            self.unreadable_tree = tree
            self.unreadable_files = {path: reason for path, reason in self.unreadable_files.items()
                                     if path in found and found[path].kind is EntryKind.FILE}
        else:
            found = {c.path: c.record for c in detected if c.record is not None}
            gone = [c.path for c in detected if c.record is None]
            for change in detected:  # in the detector's order: a path's last report says if it is restless
                if change.record is not None and change.restless:
                    restless.add(change.path)
                else:
                    restless.discard(change.path)
            if unreadable is not None:
                self._catch_up(unreadable, found, gone)
            # The detector reports a change once: a file that could not be read is tried again each round.
            for path in list(self.unreadable_files):
                if path not in found and path not in gone:
                    try:
                        record = look(self.root, path)
                    except PermissionError:
                        continue  # its directory is not searchable: still unreadable
                    if record is not None and record.kind is EntryKind.FILE:
                        found[path] = record
                    else:
                        del self.unreadable_files[path]  # gone or no longer a file: the detector reports that
        for path in gone:
            self.unreadable_files.pop(path, None)
        stored = self._store_changed(found, restless)
        behind = False
        changes: list[tuple[str, Observation | None]] = []
        for path, record in found.items():
            content = b""
            if record.kind is EntryKind.FILE:
                if path in self.unreadable_files:
                    continue  # the state keeps what it had: no change is known, and none is lost
                if path not in stored:
                    known = self.seen.get(path)
                    if known is None or known[0] != record:
                        behind = True  # past this round's ROUND_FILES: a later round reads it
                        continue
                    content = known[1]
                elif (fresh := stored[path]) is None:
                    retry.append(path)
                    continue  # still being written: the next round looks again
                else:
                    content = fresh
            elif record.kind is EntryKind.SYMLINK:
                content = os.fsencode(os.readlink(self.root / path))
            changes.append((path, Observation(record.kind, content, record.size, record.mtime_ns, record.mode)))
        changes.extend((path, None) for path in gone)
        return changes, behind

    def _catch_up(self, unreadable: Mapping[str, str], found: dict[str, ScanRecord], gone: list[str]) -> None:
        """Take the detector's unreadable paths; look here at each one it can read again (blocking).

        What changed under such a path while it could not be read must be in
        the state before this round merges, or a remote version would replace
        it unseen; the detector's batch saying so may not have come yet.
        """
        tree = dict(unreadable)
        cleared = [path for path in self.unreadable_tree if not covered(path, tree)]
        rules = IgnoreRules.load(self.root) if cleared else None
        for path in cleared:
            assert rules is not None
            under = scan_tree(self.root, rules, under=path, unreadable=tree)
            for child, record in under.items():
                found.setdefault(child, record)
            gone.extend(child for child, entry in self.state.items()
                        if (child == path or child.startswith(path + "/")) and not entry.deleted
                        and child not in under and child not in found and not covered(child, tree))
        self.unreadable_tree = tree

    def _store_changed(self, found: dict[str, ScanRecord], restless: Collection[str] = ()) -> dict[str, bytes | None]:
        """Store the files not seen as they are now; their content references (None: changed while read).

        At most ``ROUND_FILES`` of them, the rest left to the next rounds.
        Small files are stored ``SMALL_FILE_THREADS`` at a time, as a folder
        snapshot stores them (node/folders/snapshot.py): each costs a few
        fsyncs, which the device overlaps; a large one runs threads of its own.
        A ``restless`` file is taken as it is when read (``found`` takes the
        look just before the read), if it looks the same just after.
        """
        todo = [path for path, record in found.items() if record.kind is EntryKind.FILE
                and (path in restless or (known := self.seen.get(path)) is None or known[0] != record)][:ROUND_FILES]
        small = [path for path in todo if found[path].size <= SMALL_FILE_BYTES]

        def store(path: str) -> Link | str | None:
            if path in restless:
                try:
                    now = look(self.root, path)
                except OSError:
                    now = None  # the read says why, or the check after it does
                if now is not None and now.kind is EntryKind.FILE:
                    found[path] = now
            return self._store_file(path)

        with ThreadPoolExecutor(max_workers=SMALL_FILE_THREADS, thread_name_prefix="mu-sync-read") as pool:
            links = dict(zip(small, pool.map(store, small)))
        links.update((path, store(path)) for path in todo if path not in links)
        out: dict[str, bytes | None] = {}
        for path, link in links.items():
            if isinstance(link, str):
                if path not in self.unreadable_files:
                    log.warning("not synced until it can be read: %r (%s)", path, link)
                self.unreadable_files[path] = link
                continue
            self.unreadable_files.pop(path, None)
            if link is None:  # gone since the detector saw it: looked at again next round
                out[path] = None
                continue
            assert link.key is not None
            self.unsent[link.root] = link
            if look(self.root, path) != found[path]:
                out[path] = None
                continue
            out[path] = link.root + link.key
            self.seen[path] = (found[path], link.root + link.key)
        return out

    def _store_file(self, path: str) -> Link | str | None:
        """The stored file's link; None if it is no longer there; the reason if it cannot be read.

        A detector's change can name a file that went away before the round
        read it (the user deleted it, or this round's previous apply did: a
        remote delete or rename).  That is no error for the round: the path
        is looked at again, and then reported gone (specs/sync.md §8 Change
        detection).  Failing the round instead would keep the same stale
        change and fail every round after it.

        A file this device may not read (permission denied) is left out of
        the round, not failed: the rest of the folder goes on syncing, and
        the file is tried again each round (specs/sync.md §8).
        """
        try:
            return store_file(self.store, self.root / path, self.cap.chunk_secret).link
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError as exc:
            if exc.filename is None or os.fsdecode(exc.filename) != str(self.root / path):
                raise  # the store's, not the file's: that fails the round
            return exc.strerror or str(exc)

    async def _publish(self) -> int | None:
        """Upload this device's state and publish its record, if it changed; join the roster."""
        assert isinstance(self.cap, WriteCap)
        data = self.state.serialize()
        seq = None
        if data != self.published:
            # The files and the state naming them (all at once: a round of 10,000 new files
            # must not wait for each in turn), then the record naming the state: a device
            # that resolves the record finds everything it names on the hosts.
            added = await trio.to_thread.run_sync(store_bytes, self.store, data, self.cap.chunk_secret, self.tmp_dir)
            await self.hosts.upload([*self.unsent.values(), added.link], announce=added.link.root)
            self.unsent.clear()
            current = await self.records.resolve_record(self.device)
            seq = current.seq + 1 if current is not None else 1
            value = DeviceRecord(self.cap.public_key, certify_device(self.cap, self.device),
                                 added.link, self.node_id).encode(self.cap.read_key, self.device)
            await self.records.publish_record(sign_mutable(self.device_seed, seq, value))
            self.published = data
            self.published_seq = seq
        roster_record = await self.records.resolve_record(self.cap.public_key)
        roster = self._roster(roster_record)
        if self.device not in roster:
            # Re-added on every round until listed: two devices joining at once may
            # overwrite each other's entry (specs/sync.md §14.3 Roster).
            roster_seq = roster_record.seq + 1 if roster_record is not None else 1
            await self.records.publish_record(
                sign_mutable(self.cap.seed, roster_seq, encode_roster(frozenset(roster | {self.device}))))
        return seq

    @staticmethod
    def _roster(record: MutableRecord | None) -> frozenset[bytes]:
        if record is None:
            return frozenset()
        try:
            return decode_roster(record.value)
        except SyncError:
            return frozenset()

    async def _remote(self, device: bytes) -> tuple[FolderState, bytes] | None:
        """Device ``device``'s checked state and its root, or None if it has published none; SyncError if refused."""
        record = await self.records.resolve_record(device)
        if record is None:
            return None
        decoded = decode_device_record(self.cap.read_cap, device, record.value)
        link = decoded.state
        await self.hosts.ensure([link], near=[link.root])
        data = await trio.to_thread.run_sync(read_bytes, self.store, link, MAX_STATE_BYTES)
        state = parse_device_state(device, data)
        known = self.peers.get(device)
        if known is None or known.seq != record.seq:
            self.peers[device] = PeerDevice(decoded.node, record.seq, self.wall_clock())
        return state, link.root

    def pending_local(self) -> int:
        """Local changes not yet on the hosts: files stored, not uploaded; for a read-only device, its own edits."""
        if self.writer:
            return len(self.unsent) + (self.state.serialize() != self.published)
        return sum(1 for _, entry in self.state.items() if entry.device == self.device)

    async def run_round(self, also: Iterable[bytes] = (), detected: Sequence[LocalChange] | None = None,
                        unreadable: Mapping[str, str] | None = None) -> RoundReport:
        """Observe, publish (a writer), resolve the others (the roster's and ``also``), merge and apply.

        ``detected``: the local changes the detector reported since the last
        round; None (the default) scans the whole tree.  ``unreadable``: with
        ``detected``, the paths the detector could not look at (its
        ``unreadable``); None keeps the last ones known.
        """
        retry: list[str] = []
        changes, behind = await trio.to_thread.run_sync(self._observe, detected, retry, unreadable)
        before = self.state
        self.state = record_local_changes(self.state, changes, now_ns=self.wall_clock())
        local_changes = sum(1 for path, _ in changes if before.get(path) != self.state.get(path))
        published = await self._publish() if self.writer else None
        if behind:
            # A file on disk not read yet is absent from the state: a remote version of its path
            # would replace it as if it were new, a lost write. Merge once every file is read.
            # With the detector's changes, the unread ones are not reported again: the next round
            # scans the whole tree (RoundReport.behind), which finds them unread.
            return RoundReport(local_changes=local_changes, published_seq=published, applied=0, conflicts=(),
                               devices=(), refused=(), retry=tuple(retry), behind=True)
        self.known_devices |= self._roster(await self.records.resolve_record(self.cap.public_key)) | set(also)
        remotes: list[FolderState] = []
        state_roots: list[bytes] = []
        merged: list[str] = []
        refused: list[str] = []
        for device in sorted(self.known_devices - {self.device}):
            try:
                remote = await self._remote(device)
            except SyncError as exc:
                refused.append(f"{device.hex()}: {exc}")
                continue
            if remote is not None:
                remotes.append(remote[0])
                state_roots.append(remote[1])
                merged.append(device.hex())
        plan = merge(self.state, *remotes)
        files = [_content_link(w.entry.content) for w in plan.writes if w.entry.kind is EntryKind.FILE]
        if files:
            await self.hosts.ensure(files, near=state_roots)
        done: tuple[int, tuple[str, ...], dict[str, str]] = (0, (), {})
        if plan.moves or plan.writes or plan.metadata or plan.deletes:
            # Applying looks at the paths the plan touches (what each action expects on disk).
            done = await trio.to_thread.run_sync(self._apply, plan)
        applied, kept, failed = done
        self.state = self._keep_local(plan.state, failed)
        for path in sorted(failed.keys() - self.unwritable.keys()):
            log.warning("not synced here until it can be written: %r (%s)", path, failed[path])
        self.unwritable = failed
        self._unwritable_at = {path: at for path, at in self._unwritable_at.items() if path in failed}
        if self.writer and plan.state.serialize() != self.published:
            await self._publish()
        return RoundReport(local_changes=local_changes, published_seq=published, applied=applied,
                           conflicts=tuple(c.copy_path for c in plan.conflicts) + kept, devices=tuple(merged),
                           refused=tuple(refused), retry=tuple(retry))

    def _apply(self, plan: MergePlan) -> tuple[int, tuple[str, ...], dict[str, str]]:
        """Carry out ``plan`` on disk in its order (specs/sync.md §7.2 The plan); blocking.

        Returns the actions done, the conflict copies kept, and the paths
        whose action failed on this disk (path -> reason: no space, a name
        too long for the file system, a directory it may not write): the
        rest of the plan is still carried out (specs/sync.md §9).
        """
        done: list[Applied | None] = []
        failed: dict[str, str] = {}

        now = time.monotonic()
        unreadable = self.unreadable

        def attempt(paths: tuple[str, ...], action: Callable[[], Applied | None], *,
                    changes_content: bool = True) -> Applied | None:
            if any(path in denied for path in paths):
                failed.update(dict.fromkeys(paths, DENIED))
                return None
            if changes_content and any(covered(path, unreadable) for path in paths):
                # What is there now was never read: a write, move or delete could destroy a local
                # change the state does not hold. Left until it can be read (specs/sync.md §8).
                # A mode or mtime changes no content: it is applied (it may be what makes it readable).
                failed.update(dict.fromkeys(paths, "its local version cannot be read"))
                return None
            if any(path in self._unwritable_at and now < self._unwritable_at[path] + UNWRITABLE_RETRY_SECONDS
                   for path in paths):  # refused lately: not tried again yet (a write that fills the disk is not redone each round)
                failed.update((path, self.unwritable.get(path, "not tried again yet")) for path in paths)
                return None
            try:
                return action()
            except OSError as exc:  # ApplyError too: what the disk refused, for these paths only
                failed.update(dict.fromkeys(paths, exc.strerror or str(exc)))
                self._unwritable_at.update(dict.fromkeys(paths, now))
                return None

        index, denied = self._look_at(plan)
        for move in plan.moves:
            source = index.get(move.source)

            def do_move(move: Move = move, source: ScanRecord | None = source) -> Applied | None:
                result = move_path(self.root, move.source, move.target, expected_source=source,
                                   expected_target=index.get(move.target), device=self.device) if source else None
                return result or self._write(move.target, move.entry, index.get(move.target))

            result = attempt((move.source, move.target), do_move)
            done.append(result)
            self._remember(result, move.entry.content)
            self.seen.pop(move.source, None)
        # The deletes before the writes: a directory replaced by a file is
        # empty by the time the file's write replaces it.
        for delete in plan.deletes:
            expected = index.get(delete.path)
            if expected is not None:
                done.append(attempt((delete.path,), partial(delete_path, self.root, delete.path, expected=expected)))
                self.seen.pop(delete.path, None)
        for write in plan.writes:
            result = attempt((write.path,), partial(self._write, write.path, write.entry, index.get(write.path)))
            done.append(result)
            self._remember(result, write.entry.content)
        for change in plan.metadata:
            expected = index.get(change.path)
            if expected is not None:
                result = attempt((change.path,), partial(set_metadata, self.root, change.path, expected=expected,
                                                         mode=change.entry.mode, mtime_ns=change.entry.mtime_ns),
                                 changes_content=False)
                done.append(result)
                self._remember(result, change.entry.content)
        # A delete or new mode of a path that could not be looked at was not done either.
        failed.update((path, DENIED) for path in denied if path not in failed)
        kept = tuple(a.kept_as for a in done if a is not None and a.kept_as is not None)
        return sum(a is not None for a in done), kept, failed

    def _keep_local(self, merged: FolderState, failed: Mapping[str, str]) -> FolderState:
        """``merged``, with this device's own entry (or none) at each path whose action failed.

        The state then says what the disk holds: the next round merges the
        remote version again and tries it again, and this device's record
        never claims a version it does not have.
        """
        if not failed:
            return merged
        entries = dict(merged.items())
        for path in failed:
            local = self.state.get(path)
            if local is None:
                entries.pop(path, None)
            else:
                entries[path] = local
        return FolderState.of(self.device, entries)

    def _look_at(self, plan: MergePlan) -> tuple[dict[str, ScanRecord], set[str]]:
        """How the paths ``plan`` touches look now (an ignored path as absent): no scan of the whole tree.

        And the paths that could not be looked at (a directory on the way is
        not searchable): their actions fail there, alone, and the state keeps
        this device's entry (an unknown path must not be taken as absent).
        """
        paths = {path for move in plan.moves for path in (move.source, move.target)}
        paths.update(action.path for actions in (plan.writes, plan.metadata, plan.deletes) for action in actions)
        index: dict[str, ScanRecord] = {}
        denied: set[str] = set()
        if not paths:
            return index, denied
        rules = IgnoreRules.load(self.root)
        for path in paths:
            try:
                record = look(self.root, path)
            except PermissionError:
                denied.add(path)
                continue
            if record is not None and not rules.ignores(path, is_dir=record.kind is EntryKind.DIRECTORY):
                index[path] = record
        return index, denied

    def _write(self, path: str, entry: FileEntry, expected: ScanRecord | None) -> Applied | None:
        if entry.kind is EntryKind.DIRECTORY:
            return make_directory(self.root, path, mode=entry.mode, expected=expected, device=self.device)
        if entry.kind is EntryKind.SYMLINK:
            return write_symlink(self.root, path, os.fsdecode(entry.content), expected=expected, device=self.device)
        return write_file(self.root, path, _chunks(self.store, _content_link(entry.content)), expected=expected,
                          mode=entry.mode, mtime_ns=entry.mtime_ns, device=self.device)

    def _remember(self, result: Applied | None, content: bytes) -> None:
        """What sync wrote is not a local change: the next scan finds it as remembered."""
        if result is not None and result.record is not None and result.record.kind is EntryKind.FILE:
            self.seen[result.path] = (result.record, content)
