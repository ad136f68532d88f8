"""Chunk lists on the store: written with each snapshot, read back with the verify link (specs/folders.md §7.1).

The writer lists every chunk of the snapshot's manifest and files after
taking it: it walks each file's manifest chunks (the cleartext headers,
specs/chunks.md §6.5) and passes over the data chunks, whose addresses
those headers give, without reading them.  A pinner reads the chain of
lists from the newest record value back, and keeps what the retention
policy keeps (specs/folders.md §9.1): every list and every snapshot
record, and the listed chunks of the kept snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from node.folders.history import follow, read_bytes
from node.folders.index import Head
from node.folders.snapshot import SnapshotTaken, store_bytes
from node.store import ChunkStore
from protocol.chunks import IntegrityError, Link, RawWalker
from protocol.folders import (
    ChunkList,
    FolderFormatError,
    chunk_list_secret,
    record_chunk_list,
    retained_numbers,
)
from protocol.folders._chunklist import MAX_CHUNK_LIST_BYTES


def file_chunks(store: ChunkStore, root: bytes, out: set[bytes]) -> None:
    """Add every chunk address of the file ``root`` to ``out``, reading its manifest chunks only.

    Raises:
        node.store.ChunkNotFound: a manifest chunk is not in the store.
    """
    walker = RawWalker(root)
    while (address := walker.next_address()) is not None:
        out.add(address)
        if walker.skip_data() is None:
            walker.feed(store.get(address, verify=False))


def store_chunk_list(store: ChunkStore, public_key: bytes, taken: SnapshotTaken, head: Head | None,
                     tmp_dir: Path) -> Link:
    """Store the list of ``taken`` (the snapshot after ``head``) like a file; return its link.

    Its ``previous`` is the list ``head``'s value names (None for a version-1
    value: a snapshot taken without a node has no list, and the chain of
    lists starts again here).
    """
    addresses: set[bytes] = set()
    for link in [taken.snapshot.manifest] + [e.link for e in taken.entries if e.link is not None]:
        file_chunks(store, link.root, addresses)
    previous = record_chunk_list(public_key, head.value) if head is not None else None
    listed = ChunkList.of(number=taken.snapshot.number, time_ns=taken.snapshot.time_ns, previous=previous,
                          record=taken.link.root, addresses=addresses)
    return store_bytes(store, listed.encode(), chunk_list_secret(public_key), tmp_dir).link


def load_chunk_list(store: ChunkStore, link: Link) -> ChunkList:
    """The list ``link`` names, each chunk verified (specs/chunks.md §6.4).

    Raises:
        FolderFormatError: the list is malformed, or a chunk failed verification.
    """
    try:
        return ChunkList.decode(read_bytes(store, link, MAX_CHUNK_LIST_BYTES))
    except IntegrityError as exc:
        raise FolderFormatError(f"chunk list: {exc}") from None


Listed = tuple[Link, ChunkList]  # one list of the chain and the link it is stored under


def list_chain(store: ChunkStore, head: Link, ensure: Callable[[Link], None]) -> Iterator[Listed]:
    """(link, list) from ``head`` back to the first of the chain, newest first, at most ``MAX_HISTORY``.

    ``ensure(link)`` brings a list's chunks into the store before it is read.

    Raises:
        FolderFormatError: a list is malformed, or the numbers do not count down by one.
    """
    return follow(head, lambda link: load_chunk_list(store, link), ensure, "chunk list")


def kept_lists(chain: Iterable[Listed]) -> tuple[list[Listed], list[Listed]]:
    """``chain`` split into (kept, pruned) by the retention policy (specs/folders.md §9.1), newest first."""
    ordered = list(chain)
    kept = retained_numbers({listed.number: listed.time_ns for _, listed in ordered})
    return ([item for item in ordered if item[1].number in kept], [item for item in ordered if item[1].number not in kept])
