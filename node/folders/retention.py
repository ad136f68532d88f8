"""Applying the retention policy to a folder's history (specs/folders.md §9 Retention policy).

The kept set is a pure function of the chain of snapshot records
(``protocol.folders.retained_numbers``: ages measured from the newest
snapshot), so every reader of the chain agrees on it without any new
record.  The records themselves, one small chunk each, are always kept:
``previous`` links stay whole, and ``mu folder log`` can say how many
snapshots were pruned.  What a pruned snapshot frees is its manifest and
the chunks of files no kept snapshot holds.

Pruning here is local bookkeeping: those chunks are unpinned in the store
and forgotten by the index's ``sent_chunks`` (so a later snapshot that
holds one again uploads it again), and :func:`chunks_to_keep` tells a
renewer of paid retention which chunks are still worth paying for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from node.folders.chunklist import list_chain
from node.folders.history import Version, history, load_manifest
from node.folders.index import FolderIndex, Head
from node.folders.results import PruneReport
from node.store import ChunkNotFound, ChunkStore
from protocol.chunks import Link, RawWalker
from protocol.folders import (
    FolderFormatError,
    ReadCap,
    WriteCap,
    decode_record_value,
    record_chunk_list,
    retained_numbers,
)

Ensure = Callable[[Link], None]

log = logging.getLogger("mu.folders")


@dataclass(frozen=True, slots=True)
class Retained:
    """A history split by the policy, each part newest first."""

    kept: tuple[Version, ...]
    pruned: tuple[Version, ...]


def split(versions: Iterable[Version]) -> Retained:
    """Split ``versions`` (newest first, as ``history`` yields them) into kept and pruned."""
    ordered = tuple(versions)
    kept = retained_numbers({v.snapshot.number: v.snapshot.time_ns for v in ordered})
    return Retained(kept=tuple(v for v in ordered if v.snapshot.number in kept),
                    pruned=tuple(v for v in ordered if v.snapshot.number not in kept))


def _versions(store: ChunkStore, cap: ReadCap, head: Head | None, ensure: Ensure | None) -> list[Version]:
    if head is None:
        return []
    return list(history(store, decode_record_value(cap.read_key, head.value), ensure))


def kept_versions(store: ChunkStore, cap: ReadCap, head: Head | None,
                  ensure: Ensure | None = None) -> tuple[Retained, list[Version]]:
    """The split history of the folder ``head`` names, and the whole history (records only are read)."""
    versions = _versions(store, cap, head, ensure)
    return split(versions), versions


def _file_chunks(store: ChunkStore, root: bytes, out: dict[bytes, int], *, partial: bool) -> None:
    """Add every chunk address (and its stored size) of the file ``root`` to ``out``.

    With ``partial``, a chunk missing from the store ends the walk quietly
    (what is not here cannot be released); without, it raises ChunkNotFound.
    """
    walker = RawWalker(root)
    while (address := walker.next_address()) is not None:
        try:
            data = store.get(address, verify=False)
        except ChunkNotFound:
            if partial:
                return
            raise
        walker.feed(data)
        out[address] = len(data)


def _snapshot_chunks(store: ChunkStore, versions: Iterable[Version], *,
                     partial: bool) -> tuple[dict[bytes, int], set[bytes]]:
    """Chunks (address -> stored size) and file roots of the manifests and files of ``versions``.

    Not their records, which are always kept.
    """
    out: dict[bytes, int] = {}
    roots: set[bytes] = set()
    for version in versions:
        try:
            entries = load_manifest(store, version.snapshot)
        except (ChunkNotFound, FolderFormatError):
            if partial:
                continue
            raise
        for link in [version.snapshot.manifest] + [e.link for e in entries if e.link is not None]:
            if link.root not in roots:
                roots.add(link.root)
                _file_chunks(store, link.root, out, partial=partial)
    return out, roots


def chunks_to_keep(store: ChunkStore, cap: ReadCap, head: Head | None) -> set[bytes]:
    """Every chunk the folder's kept snapshots need: records, chunk lists, and the kept manifests and files.

    For a renewer of paid retention (specs/network.md §7): a chunk of the
    folder outside this set belongs to pruned snapshots only.

    Raises:
        node.store.ChunkNotFound: a chunk of a kept snapshot is not in the store.
    """
    retained, versions = kept_versions(store, cap, head)
    keep, _ = _snapshot_chunks(store, retained.kept, partial=False)
    for version in versions:
        _file_chunks(store, version.link.root, keep, partial=False)
    listed = record_chunk_list(cap.public_key, head.value) if head is not None else None
    if listed is not None:  # chunk lists, like records, are never pruned (§9.1)
        for link, _ in list_chain(store, listed, lambda link: None):
            _file_chunks(store, link.root, keep, partial=False)
    return set(keep)


def prune(store: ChunkStore, index: FolderIndex, cap: WriteCap, head: Head | None, *,
          dry_run: bool = False, ensure: Ensure | None = None) -> PruneReport:
    """Apply the policy: release the chunks only newly pruned snapshots need.

    Snapshots the index records as pruned are not walked again, so applying
    the policy after every snapshot walks the kept ones only when some
    snapshot leaves the policy.  ``ensure`` fetches records missing from
    the store.  The released chunks are unpinned and forgotten as sent
    (with the file roots no kept snapshot holds).

    Raises:
        node.store.ChunkNotFound: a chunk of a kept snapshot is not in the store.
    """
    folder = cap.public_key
    retained, _ = kept_versions(store, cap.read_cap, head, ensure)
    done = index.pruned(folder)
    fresh = [v for v in retained.pruned if v.link.root not in done]
    released: dict[bytes, int] = {}
    if fresh:
        candidates, gone_roots = _snapshot_chunks(store, fresh, partial=True)
        needed, kept_roots = _snapshot_chunks(store, retained.kept, partial=False)
        released = {a: size for a, size in candidates.items() if a not in needed}
        if not dry_run:
            store.unpin(list(released))
            index.record_pruned(folder, [v.link.root for v in fresh], chunks=list(released),
                                roots=gone_roots - kept_roots)
    return PruneReport(kept=len(retained.kept), pruned=len(retained.pruned), newly_pruned=len(fresh),
                       chunks_released=len(released), bytes_released=sum(released.values()), dry_run=dry_run)


def prune_after_snapshot(store: ChunkStore, index: FolderIndex, cap: WriteCap, head: Head, *,
                         ensure: Ensure | None = None) -> PruneReport | None:
    """Apply the policy after a snapshot (specs/folders.md §10 step 6); None if it could not be applied.

    The snapshot is taken and published by then, so a kept snapshot's chunk
    missing from the store (snapshots taken elsewhere with the same write
    link) does not fail it: nothing is released, and ``mu folder prune``
    says which chunk is missing.
    """
    try:
        return prune(store, index, cap, head, ensure=ensure)
    except ChunkNotFound as exc:
        log.warning("retention not applied after the snapshot: %s", exc)
        return None
