"""On-disk chunk store: one file per chunk, sharded, atomic, verified (specs/chunks.md §8).

Layout under the store root (``<data_dir>/chunks``)::

    <aa>/<64 hex chars>   a chunk, named by its address; <aa> = first byte in hex
    tmp/                  chunks being written (temp name, fdatasync, hard link)
    index.sqlite3         the index (rebuildable from the files, except
                          retention metadata: see rebuild_index)

``ChunkStore`` is the front: it owns the index and the parts that work on
it, built here and handed what each needs (composition, no shared base
class): the quota account and dirty flag, the :class:`ChunkWriter` (durable
writes and deletes, specs/chunks.md §8.2 Writing), the
:class:`IndexRebuilder` (crash repair, §8.3 Index) and the
:class:`RetentionBook` (paid-until times and pins, §8.6 Retention metadata).
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ._errors import ChunkCorrupt, ChunkNotFound
from ._index import INDEX_FILE, ChunkIndex
from ._rebuild import RECOVERED_GRACE_SECONDS, STALE_TEMP_SECONDS, IndexRebuilder, RebuildReport
from ._stream import STREAM_WINDOW, put_stream
from ._writer import Chunk, ChunkWriter, DirtyFlag, StoreSpace
from .retention import GC_BATCH, ChunkMeta, RetentionBook


class ChunkStore:
    """Chunks on disk, addressed by SHA-256 of their bytes.

    Synchronous and thread-safe: trio code calls it through
    ``trio.to_thread.run_sync``.

    Args:
        root: the store directory (created if missing).
        quota_bytes: most chunk bytes the store may hold; None for no limit.
    """

    def __init__(self, root: Path, quota_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._index = ChunkIndex(self.root / INDEX_FILE)
        self._space = StoreSpace(quota_bytes)
        self._dirty = DirtyFlag(self._index)
        self._writer = ChunkWriter(self.root, self._index, self._space, self._dirty)
        self._rebuilder = IndexRebuilder(self.root, self._index, self._space, self._dirty)
        self._retention = RetentionBook(self._index, self._writer)
        if self._dirty.found_set():
            # Last user did not close cleanly: a chunk may have been renamed
            # into place without its index row. The files are the truth.
            self.rebuild_index()
        self._space.reset(self._index.total_bytes())

    # -- lifecycle -------------------------------------------------------

    def close(self) -> None:
        """Mark the index clean and close it."""
        self._dirty.clear()
        self._index.close()

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------

    @property
    def quota_bytes(self) -> int | None:
        """Most chunk bytes the store may hold; None for no limit."""
        return self._space.quota_bytes

    @quota_bytes.setter
    def quota_bytes(self, value: int | None) -> None:
        # A running node's new limit (the web app's Settings): checked from the next write on;
        # chunks already held stay, even above it.
        self._space.quota_bytes = value

    @property
    def used_bytes(self) -> int:
        """Bytes of chunk data held (as counted by the index)."""
        return self._space.used

    def path_of(self, address: bytes) -> Path:
        """Where the chunk with ``address`` lives (whether or not it exists)."""
        return self._writer.path_of(address)

    def has(self, address: bytes) -> bool:
        """True if a chunk file with this address exists (not verified)."""
        return self.path_of(address).is_file()

    def may_have(self, address: bytes) -> bool:
        """False when the chunk is surely not stored; answered from memory, so trio code calls it directly.

        True means probably: :meth:`get` may still raise ChunkNotFound (a
        chunk sharing the address's first bytes, a file removed by hand).
        """
        return self._index.may_hold(address)

    def get(self, address: bytes, *, verify: bool = True) -> bytes:
        """Return the chunk's bytes after checking they hash to ``address``.

        ``verify=False`` skips the hash only for callers that verify the
        bytes themselves (the file decoder does).

        Raises:
            ChunkNotFound: no such chunk.
            ChunkCorrupt: the file's bytes do not hash to ``address``.
        """
        path = self.path_of(address)
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.readall()
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {address.hex()} not found", address) from None
        if verify and hashlib.sha256(data).digest() != address:
            raise ChunkCorrupt(f"chunk {address.hex()} is corrupt: its bytes do not match its address", address)
        return data

    def __iter__(self) -> Iterator[bytes]:
        for address, _size in self._index.iter_rows():
            yield address

    def list(self) -> builtins.list[bytes]:  # the method shadows the builtin in this class
        """Every stored address, in address order (see :meth:`entries` for big stores)."""
        return [address for address, _size in self._index.iter_rows()]

    def entries(self) -> Iterator[tuple[bytes, int]]:
        """Every stored (address, size), in address order, a page at a time."""
        return self._index.iter_rows()

    def __len__(self) -> int:
        return self._index.count()

    # -- writing ---------------------------------------------------------

    def put(self, address: bytes, data: Chunk, *, verify: bool = True) -> bool:
        """Store one chunk durably; see :meth:`put_many`."""
        return self._writer.put_many([(address, data)], verify=verify) == 1

    def put_many(self, items: Iterable[tuple[bytes, Chunk]], *, verify: bool = True) -> int:
        """Store chunks durably; return how many were new.

        Each chunk is written to a temp file, fdatasynced and hard-linked to
        its final name, so every chunk is atomic on its own. The directory
        fsyncs that make the new names durable are shared by the batch, and
        all of them happen before this returns: when it returns, every chunk
        is on disk.

        ``verify=False`` skips re-hashing for callers that computed the
        address from these very bytes (the file encoder).

        Raises:
            ChunkMismatch: bytes that do not hash to their address.
            StoreFull: the quota or the disk would be exceeded; chunks
                written before the failing one stay stored.
        """
        return self._writer.put_many(items, verify=verify)

    def put_stream(self, items: Iterable[tuple[bytes, Chunk]], *, verify: bool = True,
                   window: int = STREAM_WINDOW) -> tuple[int, int]:
        """Store a stream of chunks durably; return (chunks seen, chunks new).

        Like :meth:`put_many` chunk by chunk, with no barrier between groups:
        the iterator runs (and may encrypt) in this thread while up to
        ``window`` chunk writes proceed on the store's threads.  When this
        returns every chunk is on disk (specs/chunks.md §8.2 Writing); see
        :func:`node.store._stream.put_stream`.
        """
        return put_stream(self._writer, items, verify=verify, window=window)

    def delete(self, address: bytes) -> bool:
        """Remove a chunk; return False if it was not stored."""
        return self._writer.delete(address)

    # -- the index from the files (specs/chunks.md §8.3 Index) -----------

    def scan_files(self) -> dict[bytes, int]:
        """Every chunk file on disk: address -> size. Ignores foreign names."""
        return self._rebuilder.scan_files()

    def remove_stale_temp_files(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Delete temp files left by crashed writers; return how many."""
        return self._rebuilder.remove_stale_temp_files(max_age)

    def rebuild_index(self, *, temp_max_age: float = STALE_TEMP_SECONDS, now: int | None = None,
                      grace_seconds: int = RECOVERED_GRACE_SECONDS) -> RebuildReport:
        """Make the index match the chunk files exactly; see ``IndexRebuilder.rebuild``."""
        return self._rebuilder.rebuild(temp_max_age=temp_max_age, now=now, grace_seconds=grace_seconds)

    # -- retention (specs/chunks.md §8.6 Retention metadata) -------------

    def meta(self, address: bytes) -> ChunkMeta | None:
        """The chunk's index row (size, paid_until, pinned), or None if not indexed."""
        return self._retention.meta(address)

    def entries_meta(self) -> Iterator[ChunkMeta]:
        """Every indexed chunk with its retention metadata, in address order."""
        return self._retention.entries_meta()

    def extend_retention(self, address: bytes, until: int) -> bool:
        """Keep the chunk at least until ``until``; False if it is not stored."""
        return self._retention.extend_retention(address, until)

    def put_retained(self, address: bytes, data: Chunk, until: int, *, verify: bool = True) -> bool:
        """Store a paid chunk and keep it at least until ``until``; see ``RetentionBook.put_retained``."""
        return self._retention.put_retained(address, data, until, verify=verify)

    def pin(self, addresses: Iterable[bytes], *, root: bytes | None = None, now: int | None = None) -> int:
        """Pin stored chunks and record ``root`` as pinned; see ``RetentionBook.pin``."""
        return self._retention.pin(addresses, root=root, now=now)

    def unpin(self, addresses: Iterable[bytes], *, root: bytes | None = None) -> int:
        """Clear the pin of chunks (and forget ``root``); they expire by their paid_until."""
        return self._retention.unpin(addresses, root=root)

    def pinned_roots(self) -> builtins.list[bytes]:
        """Roots pinned on this node, oldest first (re-announced after a restart)."""
        return self._retention.pinned_roots()

    def expired(self, now: int, limit: int = GC_BATCH) -> builtins.list[bytes]:
        """Unpinned chunks whose paid retention ran out (paid_until <= now), oldest first."""
        return self._retention.expired(now, limit)

    def collect_expired(self, now: int, limit: int = GC_BATCH) -> builtins.list[bytes]:
        """Delete unpinned chunks whose paid retention ran out; return their addresses."""
        return self._retention.collect_expired(now, limit)
