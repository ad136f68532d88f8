"""The running node's sync service: synced folders, their rounds, the ``sync-*`` control routes.

Each synced folder is one ``FolderSync`` (node/sync/engine.py).  Its
rounds run when something happened: the folder's ``ChangeDetector``
(node/sync/detect.py, watchdog events plus its periodic rescan) reported
local changes, or another device's node sent SYNC_NOTIFY after publishing
(node/sync/notify.py, specs/sync.md §16 Notify); and every ``POLL_SECONDS``
in any case, since polling the other devices' records is the safety net
(specs/sync.md §14 Devices).  A round that publishes notifies the nodes
the other devices' records name.  The folders, their
links and device seeds are kept in ``DATA_DIR/sync/folders.json`` (0600,
beside the node's other keys); each device's state is saved after every
round (``STATE_SUFFIX``), since a device that lost its state must not reuse
its id (specs/sync.md §4 Version vectors).

Chunks go to hosts as the folder routes send them (paid PUTs to the R
closest nodes, a free HAVE first so nothing is paid twice) and come back
through the paid fetcher.  Links and seeds come in request bodies and are
never logged or echoed, except the links ``sync-add`` prints once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import trio

from node.api.control import ControlError, ControlServer, Param, ParamKind
from node.exchange.paying import PaidPeers
from node.files.fetcher import PaidSource, fetch_into_store
from node.files.locate import DhtResolver, PeerDialer, free_source
from node.files.uploader import free_put, replicate_file
from node.store import ChunkStore
from node.store.retention import holds_file
from node.transport import Session
from protocol.chunks import Link
from protocol.fetch import DEFAULT_REPLICAS, dht_key
from protocol.folders import CapError, ReadCap, WriteCap, parse_cap
from protocol.identity import SEED_SIZE
from protocol.kademlia import RemoteProtocolError
from protocol.sync import CONFLICT_MARKER, FolderState
from protocol.wire import SyncNotify

from .detect import MAX_PENDING_PATHS, ChangeDetector, LocalChange
from .engine import FolderSync, RoundReport
from .ignore import TEMP_PREFIX
from .notify import NOTIFY_DEBOUNCE, NotifyGate, send_notifies
from .watch import watch_folder

log = logging.getLogger("mu.sync")

Json = dict[str, Any]
SYNC_DIR = "sync"
FOLDERS_FILE = "folders.json"
STATE_SUFFIX = ".state"
#: Period of a folder's round whatever happens: polling the other devices' records is the safety net.
POLL_SECONDS = 2.0
#: Files uploaded or fetched at once by one round (specs/sync.md §15 The sync service).
PARALLEL_FILES = 16
#: Environment variable overriding ``POLL_SECONDS`` (tests prove notify with a long poll).
POLL_ENV = "MU_SYNC_POLL_SECONDS"
#: Conflict copies ``sync-status`` lists by name (it counts them all).
MAX_STATUS_CONFLICTS = 100
# Unreadable (and unwritable) paths sync-status names (it counts them all).
MAX_STATUS_UNREADABLE = 100
# Distinct failures a failed round's error names.
MAX_FAILURES_NAMED = 3


@dataclass(frozen=True, slots=True)
class SyncedFolder:
    """One synced directory as this node keeps it."""

    path: str
    link: str  # the write or read link the folder was added with
    device_seed: str  # hex
    paused: bool = False


class NodeHosts:
    """Chunks to and from the network's hosts, paid (the ``Hosts`` of node/sync/engine.py).

    The files of one call go ``PARALLEL_FILES`` at a time (each file's chunks
    ``PARALLEL_CHUNKS`` at a time, node/files/uploader.py) and share one
    placement view (specs/network.md §3 Placement, Resolving placement from a
    view): one lookup per call, not one per file.  A device announces one
    provider record per upload, for its state's root (specs/sync.md §15 The
    sync service), not one per file.
    """

    def __init__(self, store: ChunkStore, dialer: PeerDialer, paid: PaidPeers | None) -> None:
        self.store, self.dialer, self.paid = store, dialer, paid

    async def upload(self, links: Sequence[Link], *, announce: bytes) -> None:
        paid_put = self.paid.put if self.paid is not None else free_put
        claimed: set[bytes] = set()  # chunks one of this call's files sends: no other file pays for them

        async def put(session: Session, address: bytes, data: bytes) -> object:
            if (await session.have((address,)))[0]:
                return False  # already there (a rerun after a kill): pay no host twice
            return await paid_put(session, address, data)

        def skip(address: bytes) -> bool:
            if address in claimed:
                return True
            claimed.add(address)
            return False

        view = await self.dialer.view(announce)
        limiter = trio.CapacityLimiter(PARALLEL_FILES)

        async def send(link: Link) -> None:
            async with limiter:
                await replicate_file(link, self.store, self.dialer, replicas=DEFAULT_REPLICAS, put=put, skip=skip,
                                     view=view, announce=False)

        async with trio.open_nursery() as nursery:
            for link in {link.root: link for link in links}.values():
                nursery.start_soon(send, link)
        try:
            await self.dialer.dht.announce_provider(dht_key(announce), tcp_port=self.dialer.transport.port)
        except RemoteProtocolError as exc:
            # Every chunk is placed already; a DHT node refusing the announcement (its
            # per-announcer limit) leaves them where placement finds them (specs/network.md §3).
            log.info("provider announcement of a synced state refused: %s", exc)

    async def ensure(self, links: Sequence[Link], *, near: Sequence[bytes]) -> None:
        roots = list(dict.fromkeys(link.root for link in links))
        missing = await trio.to_thread.run_sync(lambda: [root for root in roots if not holds_file(self.store, root)])
        if not missing:
            return
        make_source = free_source if self.paid is None else functools.partial(PaidSource.open, self.paid)
        max_price = self.paid.payer.max_price_per_mib_get if self.paid is not None else 0
        view = await self.dialer.view(near[0] if near else missing[0])
        providers: list[bytes] = []
        for state_root in near:
            providers += [p for p in await self.dialer.providers(dht_key(state_root)) if p not in providers]
        limiter = trio.CapacityLimiter(PARALLEL_FILES)

        by_root = {link.root: link for link in links if link.key is not None}

        async def fetch(root: bytes) -> None:
            async with limiter:
                resolver = DhtResolver(self.dialer, root, make_source=make_source, view=view, providers=providers)
                await fetch_into_store(by_root.get(root) or Link(root), self.store, max_price_per_mib=max_price,
                                       resolver=resolver)

        async with trio.open_nursery() as nursery:
            for root in missing:
                nursery.start_soon(fetch, root)


def _text(body: Json, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ControlError(400, "bad-argument", f"{name} must be a string")
    return value


def _directory(body: Json) -> Path:
    path = Path(_text(body, "path"))
    if not path.is_absolute():
        raise ControlError(400, "bad-argument", "path must be an absolute path")
    return path


def describe_failure(exc: BaseException) -> str:
    """What failed, for a user: ``Type: message`` of each exception (a group's, each once), at most 3 named."""
    found: list[str] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif (text := f"{type(exc).__name__}: {exc}") not in found:
            found.append(text)

    walk(exc)
    more = f" (and {len(found) - MAX_FAILURES_NAMED} more)" if len(found) > MAX_FAILURES_NAMED else ""
    return "; ".join(found[:MAX_FAILURES_NAMED]) + more


def _overlap(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` (resolved) are the same directory or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def _remove_leftovers(root: Path) -> None:
    """Remove sync's temporary files a crash left between write and rename (specs/sync.md §9)."""
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(TEMP_PREFIX):
                Path(directory, name).unlink(missing_ok=True)


class SyncService:
    """Every synced folder of one node."""

    def __init__(self, data_dir: Path, store: ChunkStore, dialer: PeerDialer, paid: PaidPeers | None = None,
                 *, wall_clock: Callable[[], int] = time.time_ns, poll_seconds: float | None = None,
                 node_id: bytes | None = None) -> None:
        self.dir = Path(data_dir) / SYNC_DIR
        self.store = store
        self.dialer = dialer
        self.records = dialer.dht
        self.hosts = NodeHosts(store, dialer, paid)
        self.wall_clock = wall_clock
        self.poll_seconds = float(os.environ.get(POLL_ENV, POLL_SECONDS)) if poll_seconds is None else poll_seconds
        self.node_id = node_id  # named in this node's devices' records, so the others can notify it
        self.folders: dict[str, SyncedFolder] = {}
        self.engines: dict[str, FolderSync] = {}
        self.last: dict[str, Json] = {}
        self.gate = NotifyGate()
        self.notifies = {"received": 0, "admitted": 0, "sent": 0}
        self.detectors: dict[str, ChangeDetector] = {}  # folders whose detector is watching
        self._detected: dict[str, list[LocalChange]] = {}  # changes reported, not yet taken by a round
        self._rescan: set[str] = set()  # folders whose next round scans the whole tree
        self._notified: dict[str, dict[bytes, int]] = {}  # folder -> device -> newest seq a notify named
        self._watch_scopes: dict[str, trio.CancelScope] = {}
        self._due: set[str] = set()  # folders to run a round for before the next poll
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._lock = trio.Lock()  # one round at a time: rounds share the store and the records

    def register(self, control: ControlServer) -> None:
        path = {"path": Param(ParamKind.STRING, required=True)}
        control.route("POST", "sync-add", self.add, params={**path, "link": Param(ParamKind.STRING)})
        control.route("GET", "sync-ls", self.ls, params={})
        control.route("POST", "sync-status", self.status, params=path)
        control.route("POST", "sync-pause", functools.partial(self._set_paused, paused=True), params=path)
        control.route("POST", "sync-resume", functools.partial(self._set_paused, paused=False), params=path)
        control.route("POST", "sync-remove", self.remove, params=path)
        control.add_status("sync", lambda: {"folders": len(self.folders), "notifies": dict(self.notifies),
                                            "notifies_rate_limited": self.gate.refused})

    def _load(self) -> None:
        path = self.dir / FOLDERS_FILE
        if path.exists():
            for item in json.loads(path.read_text()):
                folder = SyncedFolder(**item)
                self.folders[folder.path] = folder

    def _save(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.dir / f".{FOLDERS_FILE}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([asdict(f) for f in self.folders.values()], f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / FOLDERS_FILE)

    def _engine(self, folder: SyncedFolder) -> FolderSync:
        engine = self.engines.get(folder.path)
        if engine is None:
            cap = parse_cap(folder.link)
            assert isinstance(cap, WriteCap | ReadCap)
            engine = FolderSync(Path(folder.path), cap, bytes.fromhex(folder.device_seed), self.store, self.records,
                                self.hosts, self.dir / "tmp", wall_clock=self.wall_clock, node_id=self.node_id)
            _remove_leftovers(Path(folder.path))
            saved = self._state_file(engine)
            if saved.exists():
                engine.state = FolderState.parse(saved.read_bytes())
            self.engines[folder.path] = engine
        return engine

    def _state_file(self, engine: FolderSync) -> Path:
        return self.dir / f"{engine.device.hex()}{STATE_SUFFIX}"

    def _save_state(self, engine: FolderSync) -> None:
        tmp = self._state_file(engine).with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(engine.state.serialize())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_file(engine))

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every unpaused folder's rounds: when due (local changes, a notify, an add) and every poll period."""
        await trio.to_thread.run_sync(self._load)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            next_poll = trio.current_time()
            while True:
                with trio.move_on_at(next_poll):
                    await self._wake.wait()
                if trio.current_time() >= next_poll:
                    next_poll = trio.current_time() + self.poll_seconds
                    due = set(self.folders)
                else:
                    # Debounce: the notifies and detector batches of one burst make one round.
                    await trio.sleep(NOTIFY_DEBOUNCE)
                    due = set(self._due)
                self._wake = trio.Event()
                self._due -= due
                for folder in list(self.folders.values()):
                    if folder.path in due and not folder.paused:
                        await self._round(folder)

    def _mark_due(self, path: str) -> None:
        self._due.add(path)
        self._wake.set()

    def notified(self, peer: bytes, message: SyncNotify) -> None:
        """SYNC_NOTIFY from node ``peer``: run a round soon for the folders syncing with that device.

        Called by the transport's handler for every notify, so it stays
        cheap and never raises: an unknown device, an old sequence number or
        a node other than the one the device's record names is dropped after
        a look-up, and a peer's notifies past one per ``NOTIFY_INTERVAL`` are
        dropped (specs/sync.md §16 Notify).
        """
        self.notifies["received"] += 1
        paths = []
        for path, engine in self.engines.items():
            if message.device == engine.device or message.device not in engine.known_devices:
                continue  # not a device of this folder: nothing to do
            known = engine.peers.get(message.device)
            if known is None or known.seq < message.seq and known.node in (None, peer):
                paths.append(path)  # only the node the device's record names speaks for it, once known
        if not paths or not self.gate.admit(peer, trio.current_time()):
            return
        self.notifies["admitted"] += 1
        for path in paths:
            seen = self._notified.setdefault(path, {})
            seen[message.device] = max(seen.get(message.device, 0), message.seq)
            self._mark_due(path)

    async def _watch(self, path: str) -> None:
        """Run ``path``'s change detector, queueing its batches for the folder's rounds, until cancelled or it fails.

        A detector that fails (the folder gone, ``.muignore`` unreadable,
        the system's inotify limit) is logged and not restarted: the
        folder's rounds scan the whole tree instead, every poll period.
        """
        send, receive = trio.open_memory_channel[tuple[LocalChange, ...]](0)
        try:
            detector = ChangeDetector(Path(path))
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_folder, detector, send)
                self.detectors[path] = detector
                async for batch in receive:
                    pending = self._detected.setdefault(path, [])
                    pending.extend(batch)
                    if len(pending) > MAX_PENDING_PATHS:  # bounded: one full scan instead
                        del self._detected[path]
                        self._rescan.add(path)
                    self._mark_due(path)
        except Exception as exc:  # noqa: BLE001 - the disk or the system; rounds fall back to full scans
            log.warning("change detection of %s stopped (rounds rescan instead): %s", path, exc)
        finally:
            self.detectors.pop(path, None)
            self._rescan.add(path)

    def _take_detected(self, path: str) -> list[LocalChange] | None:
        """The changes for this round; None: scan the whole tree (no detector, or its batches overflowed)."""
        pending = self._detected.pop(path, [])
        if path not in self.detectors or path in self._rescan:
            self._rescan.discard(path)
            return None
        return pending

    async def _round(self, folder: SyncedFolder) -> None:
        async with self._lock:
            if self.folders.get(folder.path) != folder:
                return  # removed or paused meanwhile
            engine = self._engine(folder)
            if self._nursery is not None and folder.path not in self._watch_scopes:
                scope = self._watch_scopes[folder.path] = trio.CancelScope()
                self._nursery.start_soon(self._run_in, scope, self._watch, folder.path)
            detected = self._take_detected(folder.path)
            before = engine.published_seq
            try:
                detector = self.detectors.get(folder.path)
                report = await engine.run_round(detected=detected,
                                                unreadable=detector.unreadable if detector is not None else None)
            except Exception as exc:  # noqa: BLE001 - whatever a peer, a host or the disk did
                # A folder that cannot sync now (a host missing or refusing, a file unreadable)
                # stays as it was and is tried again next round; the node never stops for it.
                # The changes it took are kept for that round.
                if detected is not None:
                    self._detected[folder.path] = detected + self._detected.get(folder.path, [])
                self.last[folder.path] = {"error": describe_failure(exc)}
                log.warning("sync of %s failed this round: %s", folder.path, self.last[folder.path]["error"])
                return
            for path in report.retry:
                if detector is not None:
                    detector.queue.note(path)  # changed while read: look again once it settles
            if report.behind:
                # Files past ROUND_FILES were left unread; the detector will not report them
                # again, so the next round scans the whole tree (specs/sync.md §15 step 1).
                self._rescan.add(folder.path)
            await trio.to_thread.run_sync(self._save_state, engine)
            self.last[folder.path] = self._report(report)
            nodes = {peer.node for peer in engine.peers.values() if peer.node is not None and peer.node != self.node_id}
        if engine.published_seq != before and nodes:
            sent = await send_notifies(self.dialer, engine.device, engine.published_seq, nodes)
            self.notifies["sent"] += sent

    @staticmethod
    async def _run_in(scope: trio.CancelScope, task: Callable[[str], Any], path: str) -> None:
        with scope:
            await task(path)

    @staticmethod
    def _report(report: RoundReport) -> Json:
        return {"time_ns": time.time_ns(), "local_changes": report.local_changes, "published_seq": report.published_seq,
                "applied": report.applied, "conflicts": list(report.conflicts), "devices": list(report.devices),
                "refused": list(report.refused)}

    async def add(self, body: Json) -> Json:
        """Body: ``path`` (absolute directory), ``link`` (optional: join an existing folder)."""
        directory = _directory(body)
        if not directory.is_dir():
            raise ControlError(400, "bad-argument", f"not a directory: {directory}")
        link = body.get("link")
        if link is None:
            cap: WriteCap | ReadCap = WriteCap(secrets.token_bytes(SEED_SIZE))
        else:
            try:
                parsed = parse_cap(link if isinstance(link, str) else "")
            except CapError as exc:
                raise ControlError(400, "bad-link", str(exc)) from None
            if not isinstance(parsed, WriteCap | ReadCap):
                raise ControlError(400, "bad-link", "syncing a folder needs its write or read link")
            cap = parsed
        if str(directory) in self.folders:
            raise ControlError(409, "exists", f"{directory} is already synced")
        self._refuse_overlap(directory)
        folder = SyncedFolder(str(directory), cap.to_string(), secrets.token_bytes(SEED_SIZE).hex())
        self.folders[folder.path] = folder
        await trio.to_thread.run_sync(self._save)
        self._mark_due(folder.path)
        reply: Json = {"path": folder.path, "read_link": cap.read_cap.to_string(),
                       "read_only": not isinstance(cap, WriteCap)}
        if isinstance(cap, WriteCap) and link is None:
            reply["write_link"] = cap.to_string()  # printed once, for the user's other devices
        return reply

    def _refuse_overlap(self, directory: Path) -> None:
        """Refuse a folder that holds this node's data dir or another synced folder, or lies inside one.

        The node's store would be synced into itself (each round's chunks new
        files for the next round, without end), and a file in two folders is
        read, written and set aside by both (specs/sync.md §15).
        """
        real = directory.resolve()
        data_dir = self.dir.parent.resolve()
        if _overlap(real, data_dir):
            raise ControlError(409, "overlaps", f"{directory} and this node's data dir {data_dir} overlap: "
                                                "sync a folder that neither holds it nor lies inside it")
        for other in self.folders:
            if _overlap(real, Path(other).resolve()):
                raise ControlError(409, "overlaps", f"{directory} and the synced folder {other} overlap: "
                                                    "one inside the other would sync its files twice")

    def _entry(self, folder: SyncedFolder) -> Json:
        engine = self.engines.get(folder.path)
        live = engine.state.live() if engine is not None else {}
        # Conflict copies stay until the user removes them (specs/sync.md §7 Merge): list those still there.
        conflicts = sorted(path for path in live if CONFLICT_MARKER in path.rsplit("/", 1)[-1])
        notified = self._notified.get(folder.path, {})
        peers = engine.peers if engine is not None else {}
        return {"path": folder.path, "paused": folder.paused, "read_only": not folder.link.startswith("mu:folder-w:"),
                "device": engine.device.hex() if engine is not None else None, "files": len(live),
                "bytes": sum(e.size for e in live.values()), "last_round": self.last.get(folder.path),
                "watching": folder.path in self.detectors,
                "pending_up": self._pending_up(folder.path, engine),
                "pending_down": sum(1 for device, seq in notified.items()
                                    if device not in peers or peers[device].seq < seq),
                "conflicts": conflicts[:MAX_STATUS_CONFLICTS], "conflict_count": len(conflicts),
                **self._not_synced(folder.path, engine),
                "devices_seen": [{"device": device.hex()[:16], "seq": peer.seq, "seen_ns": peer.seen_ns,
                                  "notifiable": peer.node is not None}
                                 for device, peer in sorted(peers.items())]}

    def _not_synced(self, path: str, engine: FolderSync | None) -> Json:
        """The paths this device could not read (permission denied) or write (no space...): tried again."""
        found = engine.unreadable if engine is not None else {}
        detector = self.detectors.get(path)
        if detector is not None:
            found |= detector.unreadable
        unwritable = engine.unwritable if engine is not None else {}
        return {"unreadable": [{"path": p, "reason": r} for p, r in sorted(found.items())[:MAX_STATUS_UNREADABLE]],
                "unreadable_count": len(found),
                "unwritable": [{"path": p, "reason": r}
                               for p, r in sorted(unwritable.items())[:MAX_STATUS_UNREADABLE]],
                "unwritable_count": len(unwritable)}

    def _pending_up(self, path: str, engine: FolderSync | None) -> int:
        """Paths the detector has not reported yet, its changes no round has taken, and the engine's unpublished ones.

        1 until the folder's first round since the node started: nothing on disk is known yet.
        """
        if path not in self.last:
            return 1
        detector = self.detectors.get(path)
        return ((detector.pending if detector is not None else 0) + len(self._detected.get(path, ()))
                + (engine.pending_local() if engine is not None else 0))

    async def ls(self, body: Json) -> Json:
        return {"folders": [self._entry(f) for f in self.folders.values()]}

    def _folder(self, body: Json) -> SyncedFolder:
        folder = self.folders.get(str(_directory(body)))
        if folder is None:
            raise ControlError(404, "not-found", "that directory is not synced")
        return folder

    async def status(self, body: Json) -> Json:
        return self._entry(self._folder(body))

    async def _set_paused(self, body: Json, *, paused: bool) -> Json:
        folder = replace(self._folder(body), paused=paused)
        self.folders[folder.path] = folder
        await trio.to_thread.run_sync(self._save)
        self._mark_due(folder.path)
        return self._entry(folder)

    async def remove(self, body: Json) -> Json:
        """Stop syncing a directory; its files stay where they are."""
        folder = self._folder(body)
        async with self._lock:
            del self.folders[folder.path]
            self.engines.pop(folder.path, None)
            scope = self._watch_scopes.pop(folder.path, None)
            if scope is not None:
                scope.cancel()
            self._detected.pop(folder.path, None)
            self._notified.pop(folder.path, None)
            await trio.to_thread.run_sync(self._save)
        return {"path": folder.path, "removed": True}
