"""Reading snapshots back from the local store: records, manifests, the chain of history (specs/folders.md §6, §8).

Every read goes through ``FileDecoder`` (specs/chunks.md §6.4 Reading with
the key), so each chunk is verified against its address and its GCM tag
before any byte is parsed; the manifest and snapshot decoders then refuse
anything non-canonical.  The chunks must be in the store already: through
a node, ``node/folders/network.py`` fetches them first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from node.store import ChunkStore
from protocol.chunks import FileDecoder, IntegrityError, Link
from protocol.folders import MAX_MANIFEST_BYTES, Entry, FolderFormatError, Snapshot, decode_manifest

# Most snapshots followed back from the newest when listing or choosing one.
MAX_HISTORY = 100_000


def read_bytes(store: ChunkStore, link: Link, limit: int) -> bytes:
    """The whole plaintext of ``link``'s file, verified, if at most ``limit`` bytes.

    Raises:
        node.store.ChunkNotFound: a chunk is not in the store.
        protocol.chunks.IntegrityError: a chunk failed verification, or the file is over ``limit``.
    """
    decoder = FileDecoder.from_link(link)
    out = bytearray()
    while (address := decoder.next_address()) is not None:
        out += decoder.feed(store.get(address, verify=False))
        if decoder.manifest is not None and decoder.manifest.size > limit:
            raise IntegrityError(f"{link.root.hex()}: {decoder.manifest.size} bytes, more than {limit} expected")
    return bytes(out)


def load_snapshot(store: ChunkStore, link: Link) -> Snapshot:
    """The snapshot record ``link`` names.

    Raises:
        FolderFormatError: the record is malformed (or the key is wrong for it).
    """
    try:
        return Snapshot.decode(read_bytes(store, link, MAX_MANIFEST_BYTES))
    except IntegrityError as exc:
        raise FolderFormatError(f"snapshot record: {exc}") from None


def load_manifest(store: ChunkStore, snapshot: Snapshot) -> tuple[Entry, ...]:
    try:
        return decode_manifest(read_bytes(store, snapshot.manifest, MAX_MANIFEST_BYTES))
    except IntegrityError as exc:
        raise FolderFormatError(f"folder manifest: {exc}") from None


@dataclass(frozen=True, slots=True)
class Version:
    """One snapshot of the history and the link it is stored under."""

    link: Link
    snapshot: Snapshot


class Chained(Protocol):
    """A numbered item linking to the one before: a snapshot record, a chunk list."""

    @property
    def number(self) -> int: ...

    @property
    def previous(self) -> Link | None: ...


C = TypeVar("C", bound=Chained)


def follow(head: Link, load: Callable[[Link], C], ensure: Callable[[Link], None] | None,
           what: str) -> Iterator[tuple[Link, C]]:
    """``load`` each item from ``head`` back along ``previous``, newest first, at most ``MAX_HISTORY``.

    ``ensure(link)``, if given, is called before each item is loaded (to fetch its chunks).

    Raises:
        FolderFormatError: the numbers do not count down by one (or ``load`` raised it).
    """
    link: Link | None = head
    expected: int | None = None
    for _ in range(MAX_HISTORY):
        if link is None:
            return
        if ensure is not None:
            ensure(link)
        item = load(link)
        if expected is not None and item.number != expected:
            raise FolderFormatError(f"{what} {item.number} follows one numbered {expected + 1}")
        yield link, item
        expected = item.number - 1
        link = item.previous


def history(store: ChunkStore, head: Link, ensure: Callable[[Link], None] | None = None) -> Iterator[Version]:
    """The snapshots from ``head`` back to the first, newest first, at most ``MAX_HISTORY``.

    ``ensure(link)``, if given, is called before each record is read (to fetch its chunks).

    Raises:
        FolderFormatError: a record is malformed, or the chain does not count down by one.
    """
    for link, snapshot in follow(head, lambda link: load_snapshot(store, link), ensure, "snapshot"):
        yield Version(link, snapshot)


def choose(versions: list[Version], *, number: int | None = None, at_ns: int | None = None) -> Version:
    """The snapshot numbered ``number``, or the newest taken at or before ``at_ns``, or the newest.

    Raises:
        LookupError: no snapshot matches.
    """
    if number is not None:
        for v in versions:
            if v.snapshot.number == number:
                return v
        if versions and 1 <= number < versions[0].snapshot.number:
            raise LookupError(f"snapshot {number} was pruned by the retention policy (specs/folders.md §9)")
        raise LookupError(f"no snapshot {number} (this folder has 1..{versions[0].snapshot.number if versions else 0})")
    if at_ns is not None:
        for v in versions:  # newest first
            if v.snapshot.time_ns <= at_ns:
                return v
        raise LookupError("no snapshot was taken at or before that time")
    if not versions:
        raise LookupError("the folder has no snapshot yet")
    return versions[0]
