"""The CLI backend with no node running: the data dir's store, ledger and saved DHT table.

``mu add`` and ``mu get`` work on the local chunk store (README "Adding and
getting files"), ``mu peers`` reads the routing table the DHT saved, ``mu
earnings`` opens the ledger (SQLite WAL lets it read beside a writer).
``mu status`` and ``mu pin`` need a node and say so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from node.cli.exit_codes import EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_FAILURE
from node.cli.results import (
    AddResult,
    BackendError,
    Decrypted,
    Earnings,
    GetResult,
    NodeStatus,
    OnProgress,
    PeersReport,
    PinResult,
    ProgressEvent,
    RawVerified,
    Stage,
    StoredLocally,
    earnings_from_json,
    peers_from_json,
)
from node.dht import TABLE_FILE, load_table
from node.files.local import add_file, get_file, load_convergence_secret
from node.files.network import peers_report
from node.folders.index import FolderIndex, Head
from node.folders.local import folder_diff, folder_log, folder_restore, snapshot_folder, snapshot_report
from node.folders.results import DiffReport, FileCounter, LogEntry, PruneReport, RestoreReport, SnapshotReport
from node.folders.retention import prune, prune_after_snapshot
from node.folders.snapshot import TMP_DIR, FolderError
from node.ledger import LEDGER_FILE, Ledger
from node.runtime.config import ConfigError, load_identity
from node.store import STORE_DIR, ChunkCorrupt, ChunkNotFound, ChunkStore, StoreError
from protocol.chunks import FileDecoder, IntegrityError, Link, LocalChunkError, RawWalker
from protocol.folders import FolderFormatError, ReadCap, WriteCap, encode_record_value

T = TypeVar("T")
NO_LEDGER = "no ledger in this data dir (has `mu node` run here?)"


def open_existing_ledger(data_dir: Path) -> Ledger | None:
    """The data dir's ledger, or None when the node never ran there."""
    path = data_dir / LEDGER_FILE
    return Ledger.open(path) if path.exists() else None


class _ByteCounter:
    """Turns the store's "n more bytes" callbacks into cumulative progress events."""

    def __init__(self, stage: Stage, total: int | None, on_progress: OnProgress | None) -> None:
        self.stage = stage
        self.total = total
        self.done = 0
        self.on_progress = on_progress

    def __call__(self, n: int) -> None:
        self.done += n
        if self.on_progress is not None:
            self.on_progress(ProgressEvent(stage=self.stage, bytes_done=self.done, bytes_total=self.total))


def _file_progress(stage: Stage, on_progress: OnProgress | None) -> FileCounter | None:
    """A folder operation's per-file callback as (throttled) progress events, or None."""
    if on_progress is None:
        return None
    report = on_progress
    return FileCounter(lambda files, size: report(ProgressEvent(stage=stage, chunks_done=files, bytes_done=size)))


class LocalBackend:
    """Serves the CLI from the files of ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def _store(self) -> ChunkStore:
        return ChunkStore(self.data_dir / STORE_DIR)

    def add(self, path: Path, *, convergent: bool, chunk_size: int | None, name: str | None,
            on_progress: OnProgress | None = None) -> AddResult:
        try:
            secret = load_convergence_secret(self.data_dir) if convergent else None
            counter = _ByteCounter(Stage.ENCRYPTING, path.stat().st_size, on_progress)
            with self._store() as store:
                added = add_file(store, path, convergence_secret=secret, chunk_size=chunk_size, name=name,
                                 progress=counter)
        except LocalChunkError as exc:
            raise BackendError(str(exc)) from None
        except (StoreError, OSError, ValueError) as exc:
            raise BackendError(f"add failed: {exc}") from None
        return AddResult(link=str(added.link), root=added.link.root_text, size=added.size, chunks=added.chunks,
                         stored=StoredLocally(new_chunks=added.new_chunks, name=added.name,
                                              media_type=added.media_type, convergent=convergent))

    def get(self, link: Link, output: Path | None, *, max_price: int | None = None,
            on_progress: OnProgress | None = None) -> GetResult:
        """Decrypt ``link`` into ``output``; with ``output`` None, verify its ciphertext chunks (``--raw``).

        ``max_price`` is for the network; the local store charges nothing.
        """
        if output is None:
            return self._verify_raw(link)
        try:
            with self._store() as store:
                counter = _ByteCounter(Stage.DECRYPTING, _size_hint(store, link), on_progress)
                got = get_file(store, link, output, progress=counter)
        except ChunkNotFound as exc:
            raise BackendError(f"{exc} (the file is not complete in the local store)", EXIT_NOT_FOUND) from None
        except (IntegrityError, ChunkCorrupt) as exc:
            raise BackendError(f"integrity failure: {exc}", EXIT_INTEGRITY) from None
        except (StoreError, OSError) as exc:
            raise BackendError(f"get failed: {exc}") from None
        return GetResult(size=got.size, path=str(got.path), root=link.root_text,
                         decrypted=Decrypted(chunks=got.chunks, name=got.name, media_type=got.media_type))

    def _verify_raw(self, link: Link) -> GetResult:
        """Walk and check the chunks already in the store by the bare root (specs/chunks.md §6.5 Verify cap)."""
        walker = RawWalker(link.root)
        try:
            with self._store() as store:
                while (address := walker.next_address()) is not None:
                    walker.feed(store.get(address))
        except ChunkNotFound as exc:
            raise BackendError(f"{exc} (the file is not complete in the local store; run a node to fetch it)",
                               EXIT_NOT_FOUND) from None
        except (IntegrityError, ChunkCorrupt) as exc:
            raise BackendError(f"integrity failure: {exc}", EXIT_INTEGRITY) from None
        except (StoreError, OSError) as exc:
            raise BackendError(f"get failed: {exc}") from None
        return GetResult(size=walker.stored_bytes, root=link.root_text,
                         verified=RawVerified(chunks=walker.chunks, data_chunks=walker.data_chunks))

    def pin(self, link: str, *, max_price: int | None = None, on_progress: OnProgress | None = None) -> PinResult:
        raise BackendError("no node is running (start one with `mu node`)", EXIT_FAILURE)

    def status(self) -> NodeStatus:
        raise BackendError(f"no node is running with data dir {self.data_dir} (start one with `mu node`)", EXIT_FAILURE)

    def peers(self) -> PeersReport:
        try:
            identity = load_identity(self.data_dir, create=False)
        except ConfigError as exc:
            raise BackendError(str(exc)) from None
        if not (self.data_dir / TABLE_FILE).exists():
            raise BackendError(f"no saved routing table in {self.data_dir}: run `mu dht lookup` or the node first",
                               EXIT_NOT_FOUND)
        contacts = load_table(self.data_dir, identity.node_id)
        return peers_from_json(peers_report(identity.node_id, ((c, None) for c in contacts), live=False))

    def earnings(self) -> Earnings:
        ledger = open_existing_ledger(self.data_dir)
        if ledger is None:
            raise BackendError(NO_LEDGER, EXIT_NOT_FOUND)
        with ledger:
            return earnings_from_json(ledger.earnings())

    def folder_snapshot(self, directory: Path, cap: WriteCap, *,
                        on_progress: OnProgress | None = None) -> SnapshotReport:
        """Snapshot into the local store; the folder's head is recorded in the index, not published."""
        def run(store: ChunkStore, index: FolderIndex) -> SnapshotReport:
            head = index.head(cap.public_key)
            taken, changes = snapshot_folder(store, index, directory, cap, head, now_ns=time.time_ns(),
                                             tmp_dir=self.data_dir / TMP_DIR,
                                             on_file=_file_progress(Stage.SCANNING, on_progress))
            seq = head.seq + 1 if head is not None else 1
            new_head = Head(seq, encode_record_value(cap.read_key, taken.link))
            index.record_head(cap.public_key, new_head)
            prune_after_snapshot(store, index, cap, new_head)  # specs/folders.md §9.1: on every snapshot
            return snapshot_report(taken, changes, seq)

        return self._folders(run)

    def folder_prune(self, cap: WriteCap, *, dry_run: bool) -> PruneReport:
        return self._folders(lambda store, index: prune(store, index, cap, index.head(cap.public_key),
                                                        dry_run=dry_run))

    def folder_log(self, cap: ReadCap) -> tuple[LogEntry, ...]:
        return self._folders(lambda store, index: tuple(folder_log(store, cap, index.head(cap.public_key))))

    def folder_restore(self, cap: ReadCap, dest: Path, *, number: int | None, at_ns: int | None,
                       sub: str | None, on_progress: OnProgress | None = None) -> RestoreReport:
        return self._folders(lambda store, index: folder_restore(
            store, cap, index.head(cap.public_key), dest, number=number, at_ns=at_ns,
            sub=os.fsencode(sub) if sub is not None else None, on_file=_file_progress(Stage.RESTORING, on_progress)))

    def folder_diff(self, cap: ReadCap, a: int | None, b: int | None) -> DiffReport:
        return self._folders(lambda store, index: folder_diff(store, cap, index.head(cap.public_key), a, b))

    def _folders(self, work: Callable[[ChunkStore, FolderIndex], T]) -> T:
        """Run ``work`` on the store and the folder index; its failures as ``BackendError``."""
        try:
            with self._store() as store, FolderIndex.open(self.data_dir) as index:
                return work(store, index)
        except LookupError as exc:
            raise BackendError(str(exc), EXIT_NOT_FOUND) from None
        except ChunkNotFound as exc:
            raise BackendError(f"{exc} (not in the local store; run a node to fetch it)", EXIT_NOT_FOUND) from None
        except (IntegrityError, ChunkCorrupt, FolderFormatError) as exc:
            raise BackendError(f"integrity failure: {exc}", EXIT_INTEGRITY) from None
        except FolderError as exc:
            raise BackendError(str(exc)) from None
        except (StoreError, OSError) as exc:
            raise BackendError(f"folder operation failed: {exc}") from None

    def sync(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        raise BackendError("syncing needs a running node (`mu node`): the node does the syncing")


def _size_hint(store: ChunkStore, link: Link) -> int | None:
    """The file size for the progress display: decrypts the root chunk once; None if that fails."""
    decoder = FileDecoder.from_link(link)
    try:
        decoder.feed(store.get(link.root, verify=False))
    except (StoreError, IntegrityError):
        return None
    manifest = decoder.manifest
    return manifest.size if manifest is not None else None
