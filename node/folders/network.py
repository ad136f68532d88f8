"""The running node's folder routes (specs/folders.md §10-§12, specs/network.md §6 Control API).

``FolderService`` serves ``folder-snapshot``, ``folder-log``,
``folder-restore``, ``folder-diff``, ``folder-prune`` and ``folder-pin`` on the control API.  The work on
the store and the file system is node/folders/local.py's, run on a worker
thread; around it this module:

* resolves the folder's newest signed record in the DHT (the index keeps
  the newest this node knew, in case the DHT is unreachable);
* fetches every chunk a read needs into the store first (the verify-cap
  walk, specs/chunks.md §6.5), from hosts found in the DHT, paid;
* uploads a new snapshot: every file not sent before, then the manifest,
  then the snapshot record (older snapshots taken without a node first), each chunk to its R closest hosts (paid PUTs),
  skipping chunks the index records as sent (so nothing is paid twice,
  across snapshots and across a rerun after a kill);
* publishes the record (next sequence number, signed with the write cap)
  only once the snapshot's chunks are out, naming the snapshot's chunk list
  (specs/folders.md §7.1), which a verify-link holder reads to pin the
  folder's ciphertext (``folder-pin``, node/folders/pinning.py).

Capabilities come in request bodies and are never logged or echoed.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from node.api.control import ControlError, ControlServer, Emit, Param, ParamKind
from node.exchange.paying import PaidPeers
from node.files.fetcher import FetchFailed, PaidSource, fetch_file, fetch_into_store
from node.files.local import get_file
from node.files.locate import DhtResolver, PeerDialer, PlacementView, free_source
from node.files.uploader import ChunkPlaced, free_put, replicate_file
from node.folders.chunklist import file_chunks, store_chunk_list
from node.folders.index import FolderIndex, Head, PinnedFolder
from node.folders.local import (
    folder_diff,
    folder_log,
    folder_restore,
    newest_head,
    snapshot_folder,
    snapshot_report,
    unsent_history,
)
from node.folders.pinning import PinReport, chain_and_walks, fetch_missing
from node.folders.restore import WriteFile
from node.folders.results import FileCounter, to_json
from node.folders.retention import prune, prune_after_snapshot
from node.folders.snapshot import TMP_DIR, FolderError
from node.store import ChunkNotFound, ChunkStore
from node.store.retention import holds_file
from node.transport import Session
from protocol.chunks import IntegrityError, Link
from protocol.fetch import DEFAULT_REPLICAS, MAX_REPLICAS, dht_key
from protocol.folders import (
    CapError,
    FolderFormatError,
    ReadCap,
    WriteCap,
    encode_record_value,
    parse_cap,
    parse_read_cap,
    parse_write_cap,
    record_chunk_list,
    record_root,
)
from protocol.kademlia import sign_mutable

log = logging.getLogger("mu.folders")

Json = dict[str, Any]
T = TypeVar("T")


def _text(body: Json, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ControlError(400, "bad-argument", f"{name} must be a string")
    return value


def _optional_int(body: Json, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is not None and (type(value) is not int or not low <= value <= high):
        raise ControlError(400, "bad-argument", f"{name} must be an integer in {low}..{high}")
    return value


def _abs_path(body: Json, name: str) -> Path:
    text = _text(body, name)
    if not Path(text).is_absolute():
        raise ControlError(400, "bad-argument", f"{name} must be an absolute path")
    return Path(text)


def _read_cap(body: Json) -> ReadCap:
    try:
        return parse_read_cap(_text(body, "link"))
    except CapError as exc:  # the message never repeats the link
        raise ControlError(400, "bad-link", str(exc)) from None


def _write_cap(body: Json) -> WriteCap:
    cap = body.get("link")
    try:
        return parse_write_cap(cap if isinstance(cap, str) else "")
    except CapError as exc:
        raise ControlError(400, "bad-link", str(exc)) from None


def _file_events(kind: str, emit: Emit) -> FileCounter:
    """A per-file callback, called on a worker thread, as throttled ``kind`` stream events.

    ``{"event": kind, "files": n, "bytes": b}``: totals so far (the CLI's progress display shows them).
    """
    def report(files: int, size: int) -> None:
        trio.from_thread.run(emit, {"event": kind, "files": files, "bytes": size})

    return FileCounter(report)


class _Placement:
    """One operation's placement view and providers, taken at the first fetch and shared by every file.

    Around the root of the folder's newest snapshot record (the one provider
    record a snapshot upload announces, specs/folders.md §10 step 4).  With
    no snapshot yet there is nothing to fetch: a file resolves its own.
    """

    def __init__(self, dialer: PeerDialer, root: bytes | None) -> None:
        self.dialer = dialer
        self.root = root
        self._view: PlacementView | None = None
        self._providers: list[bytes] | None = None
        self._lock = trio.Lock()  # files fetched together wait for one lookup

    async def get(self) -> tuple[PlacementView | None, list[bytes] | None]:
        if self.root is None:
            return None, None
        async with self._lock:
            if self._view is None or not self._view.node_ids:  # an empty view (still joining) is taken again
                self._view = await self.dialer.view(self.root)
            if self._providers is None:
                self._providers = await self.dialer.providers(dht_key(self.root))
        return self._view, self._providers


class FolderService:
    """Folder snapshots through the network, for one node."""

    def __init__(self, data_dir: Path, store: ChunkStore, dialer: PeerDialer, paid: PaidPeers | None = None,
                 *, wall_clock: Callable[[], int] = time.time_ns) -> None:
        self.data_dir = Path(data_dir)
        self.store = store
        self.dialer = dialer
        self.paid = paid
        self.wall_clock = wall_clock
        # One folder operation at a time, each with the index open for its duration only: the
        # heads and sent chunks stay in step, and nothing is left open when the node stops.
        self._lock = trio.Lock()

    def register(self, control: ControlServer) -> None:
        link = Param(ParamKind.STRING, required=True)
        integer, string = Param(ParamKind.INTEGER), Param(ParamKind.STRING)
        control.stream_route("folder-snapshot", self.snapshot, params={
            "link": link, "path": Param(ParamKind.STRING, required=True), "replicas": integer})
        control.stream_route("folder-log", self.log, params={"link": link})
        control.stream_route("folder-restore", self.restore, params={
            "link": link, "output": Param(ParamKind.STRING, required=True), "number": integer, "at_ns": integer,
            "sub": string})
        control.stream_route("folder-diff", self.diff, params={"link": link, "a": integer, "b": integer})
        control.stream_route("folder-prune", self.prune, params={"link": link, "dry_run": Param(ParamKind.BOOLEAN)})
        control.stream_route("folder-pin", self.pin, params={"link": link})
        control.route("GET", "folder-pins", self.pins, params={})

    async def _head(self, index: FolderIndex, folder: bytes) -> Head | None:
        record = await self.dialer.dht.resolve_record(folder)
        resolved = Head(record.seq, record.value) if record is not None else None
        return await trio.to_thread.run_sync(newest_head, index, folder, resolved)

    async def _ensure(self, link: Link, placement: _Placement) -> None:
        """Bring every chunk of ``link``'s file into the store (nothing is fetched that is here).

        Hosts come from the operation's one placement view and the snapshot's
        providers (``placement``), not from lookups of this file's own.
        """
        if await trio.to_thread.run_sync(holds_file, self.store, link.root):
            return
        resolver, max_price = await self._hosts(link, placement)
        await fetch_into_store(link, self.store, max_price_per_mib=max_price, resolver=resolver)

    async def _fetch_plain(self, link: Link, path: Path, placement: _Placement) -> None:
        """Fetch ``link``'s file into ``path`` as ``mu get`` does: the plaintext written (and fsynced)
        once, the data chunks not kept in the store, those already there used."""
        resolver, max_price = await self._hosts(link, placement)
        await fetch_file(link, path, [], max_price_per_mib=max_price, resolver=resolver, store=self.store,
                         keep_chunks=False)

    async def _hosts(self, link: Link, placement: _Placement) -> tuple[DhtResolver, int]:
        """Where a fetch of ``link``'s file finds its hosts, and the most it pays per MiB."""
        paid = self.paid
        make_source = free_source if paid is None else functools.partial(PaidSource.open, paid)
        max_price = paid.payer.max_price_per_mib_get if paid is not None else 0
        view, providers = await placement.get()
        return DhtResolver(self.dialer, link.root, make_source=make_source, view=view, providers=providers), max_price

    def _writer(self, placement: _Placement) -> WriteFile:
        """A restore's ``write``, called on its worker threads: out of the store when it holds the whole
        file, else fetched straight into the file (no copy of the ciphertext kept).  Called in trio."""
        token = trio.lowlevel.current_trio_token()  # the restore's file threads are not trio's

        def write(link: Link, path: Path) -> None:
            if holds_file(self.store, link.root):
                get_file(self.store, link, path)
            else:
                trio.from_thread.run(self._fetch_plain, link, path, placement, trio_token=token)

        return write

    async def _in_thread(self, work: Callable[[Callable[[Link], None]], T], head: Head | None = None,
                         placement: _Placement | None = None) -> T:
        """Run ``work(ensure)`` on a worker thread, ``ensure`` fetching on the trio thread; map errors.

        Every fetch of the operation shares one placement view (``placement``,
        by default taken around the root of ``head``'s snapshot, and that
        root's providers).
        """
        if placement is None:
            placement = _Placement(self.dialer, None if head is None else record_root(head.value))

        def ensure(link: Link) -> None:
            trio.from_thread.run(self._ensure, link, placement)

        try:
            return await trio.to_thread.run_sync(work, ensure)
        except (LookupError, FetchFailed) as exc:
            raise ControlError(404, "not-found", str(exc)) from None
        except (IntegrityError, FolderFormatError) as exc:
            raise ControlError(422, "integrity", str(exc)) from None
        except FolderError as exc:
            raise ControlError(409, "folder", str(exc)) from None
        except ChunkNotFound as exc:
            raise ControlError(404, "not-found", str(exc)) from None
        except OSError as exc:
            raise ControlError(500, "io", f"{exc.filename or ''}: {exc.strerror or exc}") from None

    async def snapshot(self, body: Json, emit: Emit) -> Json:
        """Body: ``link`` (write link), ``path`` (absolute directory), ``replicas`` (1..20)."""
        cap = _write_cap(body)
        directory = _abs_path(body, "path")
        replicas = _optional_int(body, "replicas", 1, MAX_REPLICAS) or DEFAULT_REPLICAS
        async with self._lock:
            with FolderIndex.open(self.data_dir) as index:
                return await self._snapshot(index, cap, directory, replicas, emit)

    async def _snapshot(self, index: FolderIndex, cap: WriteCap, directory: Path, replicas: int, emit: Emit) -> Json:
        head = await self._head(index, cap.public_key)
        taken, changes = await self._in_thread(lambda ensure: snapshot_folder(
            self.store, index, directory, cap, head, now_ns=self.wall_clock(),
            tmp_dir=self.data_dir / TMP_DIR, ensure=ensure, on_file=_file_events("read", emit)), head)
        await emit({"event": "scanned", "files": taken.snapshot.files, "files_read": taken.files_read,
                    "size": taken.snapshot.size})
        older = await trio.to_thread.run_sync(unsent_history, self.store, index, taken.snapshot.previous)
        files = [e.link for e in taken.entries if e.link is not None]
        # specs/folders.md §7.1: the list of every chunk, for verify-link holders; uploaded like the rest.
        listed = await self._in_thread(lambda ensure: store_chunk_list(
            self.store, cap.public_key, taken, head, self.data_dir / TMP_DIR), head)
        uploaded, skipped, under, list_uploaded = await self._upload(
            index, older + files + [taken.snapshot.manifest, listed, taken.link], replicas, emit, apart=listed.root)
        # One provider record per snapshot, for its record's root (specs/folders.md §10 step 4):
        # a reader finds every file by its chunks' placement, and this node as the fallback.
        await self.dialer.dht.announce_provider(dht_key(taken.link.root), tcp_port=self.dialer.transport.port)
        seq = head.seq + 1 if head is not None else 1
        value = encode_record_value(cap.read_key, taken.link, public_key=cap.public_key, chunk_list=listed)
        record = sign_mutable(cap.seed, seq, value)
        published = await self.dialer.dht.publish_record(record)
        await trio.to_thread.run_sync(index.record_head, cap.public_key, Head(seq, value))
        # specs/folders.md §9 Retention policy: applied on every snapshot.
        await self._in_thread(lambda ensure: prune_after_snapshot(self.store, index, cap, Head(seq, value),
                                                                  ensure=ensure), head)
        log.info("folder snapshot %d published (seq %d) to %d nodes", taken.snapshot.number, seq, published)
        return to_json(snapshot_report(taken, changes, seq, chunks_uploaded=uploaded - list_uploaded,
                                       list_chunks_uploaded=list_uploaded, chunks_already_sent=skipped,
                                       under_replicated=under, published_to=published))

    async def _upload(self, index: FolderIndex, links: list[Link], replicas: int, emit: Emit, *,
                      apart: bytes | None = None) -> tuple[int, int, int, int]:
        """Send what the index does not record as sent.

        Returns (chunks sent, chunks skipped, under-replicated, chunks sent of
        the file ``apart``, also counted in the first), so a snapshot reports
        its chunk list's uploads beside its own.

        A host is first asked (HAVE, free) whether it holds the chunk: after a
        kill between a paid PUT and the index's record of it, the rerun pays
        no host twice for one chunk.
        """
        paid_put = self.paid.put if self.paid is not None else free_put

        async def put(session: Session, address: bytes, data: bytes) -> object:
            if (await session.have((address,)))[0]:
                return False
            return await paid_put(session, address, data)

        sent = skipped = under = sent_apart = 0
        seen: set[bytes] = set()
        view: PlacementView | None = None  # one view for every file of the snapshot (specs/network.md §3)
        for link in links:
            if link.root in seen or await trio.to_thread.run_sync(index.root_sent, link.root):
                continue
            seen.add(link.root)
            short = 0

            def skip(address: bytes) -> bool:
                nonlocal skipped
                done = index.chunk_sent(address)
                skipped += done
                return done

            async def on_chunk(placed: ChunkPlaced) -> None:
                nonlocal sent, short, sent_apart
                sent += 1
                sent_apart += link.root == apart
                await emit({"event": "replicated", "address": placed.address.hex(), "replicas": len(placed.replicas)})
                if len(placed.replicas) >= replicas:
                    await trio.to_thread.run_sync(index.record_chunk_sent, placed.address)
                else:
                    short += 1

            if view is None or not view.node_ids:
                view = await self.dialer.view(links[-1].root)
            report = await replicate_file(link, self.store, self.dialer, replicas=replicas, put=put,
                                          on_chunk=on_chunk, skip=skip, view=view, announce=False)
            under += report.under_replicated
            if not short:
                await trio.to_thread.run_sync(index.record_root_sent, link.root)
        return sent, skipped, under, sent_apart

    async def pin(self, body: Json, emit: Emit) -> Json:
        """Body: ``link`` (any folder link; the verify link is enough).

        Fetches (paid) and pins every chunk the folder's retention policy
        keeps, as its chunk lists name them (specs/folders.md §7.1), and
        announces this node as a provider of the newest snapshot record.
        """
        try:
            cap = parse_cap(_text(body, "link"))
        except CapError as exc:  # the message never repeats the link
            raise ControlError(400, "bad-link", str(exc)) from None
        async with self._lock:
            with FolderIndex.open(self.data_dir) as index:
                head = await self._head(index, cap.public_key)
            if head is None:
                raise ControlError(404, "not-found", "the folder has no published snapshot")
            newest = record_chunk_list(cap.public_key, head.value)
            if newest is None:
                raise ControlError(409, "folder", "the folder's newest snapshot has no chunk list (taken by an older "
                                                  "mu, or without a node): snapshot it again through a node")
            report = await self._pin(cap.public_key, head, newest)
        return to_json(report)

    async def pins(self, body: Json) -> Json:
        """The folders pinned here: public key (hex, not a link: links are never printed), newest, chunks, when."""
        async with self._lock:
            with FolderIndex.open(self.data_dir) as index:
                pins = await trio.to_thread.run_sync(index.pins)
        return {"folders": [{"folder": p.folder.hex(), "newest": p.newest, "chunks": p.chunks,
                             "pinned_ns": p.pinned_ns} for p in pins]}

    async def _pin(self, folder: bytes, head: Head, newest: Link) -> PinReport:
        kept, pruned = await self._in_thread(lambda ensure: chain_and_walks(self.store, newest, ensure), head)
        root = record_root(head.value)
        newest_list = kept[0][1]
        if newest_list.record != root:  # the newest is always kept (specs/folders.md §9)
            raise ControlError(422, "integrity", "the folder's chunk list names another snapshot record than its record")
        placement = _Placement(self.dialer, root)
        paid = self.paid
        make_source = free_source if paid is None else functools.partial(PaidSource.open, paid)
        view, providers = await placement.get()
        resolver = DhtResolver(self.dialer, root, make_source=make_source, view=view, providers=providers)
        wanted = sorted({a for _, listed in kept for a in listed.addresses})
        try:
            fetched, size = await fetch_missing(self.store, wanted, lambda a, lookup: resolver.holders(a, lookup=lookup))
        except FetchFailed as exc:
            raise ControlError(404, "not-found", str(exc)) from None

        def pin_all() -> int:
            chunks = set(wanted)
            for link, listed in kept + pruned:  # every list and record: the chains stay whole (§9.1)
                file_chunks(self.store, link.root, chunks)
                file_chunks(self.store, listed.record, chunks)
            self.store.pin(sorted(chunks), root=root)
            with FolderIndex.open(self.data_dir) as index:
                before = index.record_pin(PinnedFolder(folder, root, newest_list.number, len(chunks),
                                                       self.wall_clock()))
            if before is not None and before.root != root:  # one store root per folder; its chunks stay pinned
                self.store.unpin([], root=before.root)
            return len(chunks)

        pinned = await trio.to_thread.run_sync(pin_all)
        await self.dialer.dht.announce_provider(dht_key(root), tcp_port=self.dialer.transport.port)
        log.info("folder pinned: %d snapshots (%d kept), %d chunks, %d fetched", len(kept) + len(pruned), len(kept),
                 pinned, fetched)
        return PinReport(snapshots=len(kept) + len(pruned), kept=len(kept), chunks=pinned, fetched=fetched,
                         bytes_fetched=size, newest=newest_list.number)

    async def prune(self, body: Json, emit: Emit) -> Json:
        """Body: ``link`` (write link), ``dry_run`` (bool)."""
        cap = _write_cap(body)
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ControlError(400, "bad-argument", "dry_run must be a boolean")
        async with self._lock:
            with FolderIndex.open(self.data_dir) as index:
                head = await self._head(index, cap.public_key)
                return to_json(await self._in_thread(
                    lambda ensure: prune(self.store, index, cap, head, dry_run=dry_run, ensure=ensure), head))

    async def log(self, body: Json, emit: Emit) -> Json:
        """Body: ``link`` (read or write link)."""
        cap = _read_cap(body)
        async with self._lock:
            with FolderIndex.open(self.data_dir) as index:
                head = await self._head(index, cap.public_key)
            lines = await self._in_thread(lambda ensure: folder_log(self.store, cap, head, ensure=ensure), head)
        return {"snapshots": [to_json(line) for line in lines]}

    async def restore(self, body: Json, emit: Emit) -> Json:
        """Body: ``link``, ``output`` (absolute directory), ``number`` or ``at_ns``, ``sub`` (a path in the folder)."""
        cap = _read_cap(body)
        dest = _abs_path(body, "output")
        number = _optional_int(body, "number", 1, 2**63 - 1)
        at_ns = _optional_int(body, "at_ns", -(2**63), 2**63 - 1)
        sub = body.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise ControlError(400, "bad-argument", "sub must be a string")
        async with self._lock:
            with FolderIndex.open(self.data_dir) as index:
                head = await self._head(index, cap.public_key)
            placement = _Placement(self.dialer, None if head is None else record_root(head.value))
            write = self._writer(placement)
            done = await self._in_thread(lambda ensure: folder_restore(
                self.store, cap, head, dest, number=number, at_ns=at_ns,
                sub=os.fsencode(sub) if sub is not None else None, ensure=ensure,
                on_file=_file_events("restored", emit), write=write), head, placement)
        return to_json(done)

    async def diff(self, body: Json, emit: Emit) -> Json:
        """Body: ``link``, ``a`` and ``b`` (snapshot numbers, optional)."""
        cap = _read_cap(body)
        a = _optional_int(body, "a", 0, 2**63 - 1)
        b = _optional_int(body, "b", 1, 2**63 - 1)
        async with self._lock:
            with FolderIndex.open(self.data_dir) as index:
                head = await self._head(index, cap.public_key)
            return to_json(await self._in_thread(
                lambda ensure: folder_diff(self.store, cap, head, a, b, ensure=ensure), head))
