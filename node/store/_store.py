"""On-disk chunk store: one file per chunk, sharded, atomic, verified (specs/chunks.md §8).

Layout under the store root (``<data_dir>/chunks``)::

    <aa>/<64 hex chars>   a chunk, named by its address; <aa> = first byte in hex
    tmp/                  chunks being written (temp name, fdatasync, hard link)
    index.sqlite3         the index (rebuildable from the files, except
                          retention metadata: see rebuild_index)

A chunk file appears under its final name only once its bytes are fsynced,
and the new name is made durable (directory fsync) before ``put`` returns, so a
crash at any point leaves either no chunk or the whole chunk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ._index import INDEX_FILE, ChunkIndex
from ._rebuild import _DIRTY, TMP_DIR, RebuildMixin
from ._retention import RetentionMixin, _check_address

# Largest chunk the store accepts: 4 MiB of data plus the GCM tag
# (specs/chunks.md §3), with headroom for manifest chunks.
MAX_CHUNK_BYTES = 4 * 1024 * 1024 + 1024
# Chunk files written and fsynced at the same time (one pool per process):
# each thread spends most of its time waiting in fdatasync, and the more of
# those are in flight, the more of them share one journal commit and device
# flush (measured on the reference VM: 8 threads ~300 MiB/s, 32 ~450 MiB/s).
# Bounds threads and open files, not memory (see STREAM_BUFFER_BYTES).
FSYNC_PARALLELISM = 32
# put_stream: chunk writes outstanding at once (open temp files being
# fsynced), chunk bytes handed to write threads but not yet copied into a
# temp file (the only chunk bytes put_stream holds in memory), and stored
# chunks between directory fsyncs + index commits.
STREAM_WINDOW = 64
STREAM_BUFFER_BYTES = 16 * 1024 * 1024
STREAM_CHECKPOINT = 256


class StoreError(Exception):
    """Base class of chunk store errors. ``address`` names the chunk, if any."""

    def __init__(self, message: str, address: bytes | None = None) -> None:
        super().__init__(message)
        self.address = address


class StoreFull(StoreError):
    """The chunk would take the store over its quota (or the disk is full)."""


class ChunkNotFound(StoreError):
    """No chunk with that address is stored."""


class ChunkCorrupt(StoreError):
    """A stored chunk no longer hashes to its address; it is never returned."""


class ChunkMismatch(StoreError, ValueError):
    """``put`` was given bytes that do not hash to the given address."""


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _fsync_pool() -> ThreadPoolExecutor:
    """Threads shared by all stores for concurrent writes and fsyncs."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=FSYNC_PARALLELISM, thread_name_prefix="mu-store-sync")
        return _POOL


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkStore(RetentionMixin, RebuildMixin):
    """Chunks on disk, addressed by SHA-256 of their bytes.

    Synchronous and thread-safe: trio code calls it through
    ``trio.to_thread.run_sync``.

    Args:
        root: the store directory (created if missing).
        quota_bytes: most chunk bytes the store may hold; None for no limit.
    """

    def __init__(self, root: Path, quota_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.quota_bytes = quota_bytes
        self._tmp = self.root / TMP_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Serialises a GC deletion with a paid PUT's retention update, so a
        # chunk paid for again while being collected is never lost.
        self._retention_lock = threading.Lock()
        self._index = ChunkIndex(self.root / INDEX_FILE)
        self._marked_dirty = False
        self._used = 0
        if self._index.get_flag(_DIRTY):
            # Last user did not close cleanly: a chunk may have been renamed
            # into place without its index row. The files are the truth.
            self.rebuild_index()
        self._used = self._index.total_bytes()

    # -- lifecycle -------------------------------------------------------

    def close(self) -> None:
        """Mark the index clean and close it."""
        if self._marked_dirty:
            self._index.set_flag(_DIRTY, 0)
        self._index.close()

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths -----------------------------------------------------------

    def path_of(self, address: bytes) -> Path:
        """Where the chunk with ``address`` lives (whether or not it exists)."""
        hexa = _check_address(address).hex()
        return self.root / hexa[:2] / hexa

    # -- reading ---------------------------------------------------------

    def has(self, address: bytes) -> bool:
        """True if a chunk file with this address exists (not verified)."""
        return self.path_of(address).is_file()

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

    def list(self) -> list[bytes]:
        """Every stored address, in address order (see :meth:`entries` for big stores)."""
        return [address for address, _size in self._index.iter_rows()]

    def entries(self) -> Iterator[tuple[bytes, int]]:
        """Every stored (address, size), in address order, a page at a time."""
        return self._index.iter_rows()

    def __len__(self) -> int:
        return self._index.count()

    @property
    def used_bytes(self) -> int:
        """Bytes of chunk data held (as counted by the index)."""
        return self._used

    # -- writing ---------------------------------------------------------

    def put(self, address: bytes, data: bytes | bytearray | memoryview, *, verify: bool = True) -> bool:
        """Store one chunk durably; see :meth:`put_many`."""
        return self.put_many([(address, data)], verify=verify) == 1

    def _admit(self, address: bytes, data: bytes | bytearray | memoryview, verify: bool) -> Path | None:
        """Check one incoming chunk and reserve its room; None if already stored.

        Raises:
            ChunkMismatch: over MAX_CHUNK_BYTES, or (with ``verify``) bytes
                that do not hash to ``address``.
            StoreFull: the quota or the disk would be exceeded.
        """
        size = len(data)
        if size > MAX_CHUNK_BYTES:
            raise ChunkMismatch(f"chunk {address.hex()} is {size} bytes, over the {MAX_CHUNK_BYTES} limit", address)
        if verify and hashlib.sha256(data).digest() != address:
            raise ChunkMismatch(f"data does not hash to chunk address {address.hex()}", address)
        final = self.path_of(address)
        if final.exists():
            return None
        self._reserve(address, size)
        return final

    def put_many(self, items: Iterable[tuple[bytes, bytes | bytearray | memoryview]], *, verify: bool = True) -> int:
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
        # Flag the index as possibly stale before any file appears, so a crash
        # between a file's link and its index row is repaired on next open.
        self._mark_dirty()
        to_write: list[tuple[Path, bytes, bytes | bytearray | memoryview]] = []
        failure: BaseException | None = None
        for address, data in items:
            try:
                address = _check_address(address)
                final = self._admit(address, data, verify)
            except BaseException as exc:
                failure = exc  # chunks before this one are still stored
                break
            if final is not None:
                to_write.append((final, address, data))
        # Write the batch concurrently: fdatasyncs issued together share
        # journal commits and device flushes (group commit), which a
        # one-at-a-time loop cannot (specs/chunks.md §8.2).
        futures = [_fsync_pool().submit(self._write_file, *job) for job in to_write]
        new: list[tuple[Path, bytes, int]] = []
        for (final, address, data), future in zip(to_write, futures):
            try:
                stored = future.result()
            except BaseException as exc:
                stored = False
                failure = failure or exc
            if stored:
                new.append((final, address, len(data)))
            else:
                self._release(len(data))
        count = self._commit_stored(new)
        if failure is not None:
            raise failure
        return count

    def put_stream(
        self,
        items: Iterable[tuple[bytes, bytes | bytearray | memoryview]],
        *,
        verify: bool = True,
        window: int = STREAM_WINDOW,
    ) -> tuple[int, int]:
        """Store a stream of chunks durably; return (chunks seen, chunks new).

        Like :meth:`put_many` chunk by chunk, with no barrier between groups:
        the iterator runs (and may encrypt) in this thread while up to
        ``window`` chunk writes proceed on the store's threads.  When this
        returns every chunk is on disk (specs/chunks.md §8.2); see
        :func:`node.store._stream.put_stream`.
        """
        from ._stream import put_stream  # that module builds on this one

        return put_stream(self, items, verify=verify, window=window)

    def _commit_stored(self, stored: list[tuple[Path, bytes, int]]) -> int:
        """Fsync the shard directories of freshly linked chunks, then index them."""
        if not stored:
            return 0
        try:
            dirs = {final.parent for final, _, _ in stored}
            for done in [_fsync_pool().submit(_fsync_dir, d) for d in dirs]:
                done.result()
        finally:
            self._index.add([(address, size) for _, address, size in stored], int(time.time()))
        return len(stored)

    def _reserve(self, address: bytes, size: int) -> None:
        with self._lock:
            if self.quota_bytes is not None and self._used + size > self.quota_bytes:
                raise StoreFull(
                    f"store full: chunk {address.hex()} ({size} bytes) would exceed the quota of "
                    f"{self.quota_bytes} bytes ({self._used} used)",
                    address,
                )
            self._used += size

    def _release(self, size: int) -> None:
        with self._lock:
            self._used -= size

    def _write_file(self, final: Path, address: bytes, data: bytes | bytearray | memoryview) -> bool:
        """Write one chunk file atomically; False if another writer stored it first."""
        return self._write_taken(final, address, [data], None)

    def _write_taken(self, final: Path, address: bytes, box: list[bytes | bytearray | memoryview],
                     written: Callable[[int], None] | None) -> bool:
        """Like :meth:`_write_file`, taking the bytes out of ``box``.

        The bytes are dropped as soon as they are in the temp file, before
        the slow fdatasync, and ``written(size)`` is called then (also if the
        write fails), so a caller can bound the chunk bytes it has handed to
        write threads rather than the writes outstanding (put_stream).
        """
        data = box.pop()
        size = len(data)
        tmp = self._tmp / f"{address.hex()}.{secrets.token_hex(4)}.tmp"
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    view = memoryview(data).cast("B")
                    while view:
                        view = view[os.write(fd, view):]
                except BaseException:
                    os.close(fd)
                    raise
            finally:
                del data
                view = None
                if written is not None:
                    written(size)
            try:
                # fdatasync covers the data and the file size, all a reader needs.
                os.fdatasync(fd)
            finally:
                os.close(fd)
            final.parent.mkdir(exist_ok=True)
            try:
                # link() never replaces: of two concurrent writers (threads or
                # processes) exactly one wins, so accounting stays exact.
                os.link(tmp, final)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                    raise
                os.rename(tmp, final)  # a filesystem without hard links
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(f"store full: the disk has no room for chunk {address.hex()}", address) from exc
            raise
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def _mark_dirty(self) -> None:
        if not self._marked_dirty:
            self._index.set_flag(_DIRTY, 1)
            self._marked_dirty = True

    def delete(self, address: bytes) -> bool:
        """Remove a chunk; return False if it was not stored."""
        path = self.path_of(address)
        self._mark_dirty()
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            self._index.remove(bytes(address))
            return False
        self._index.remove(bytes(address))
        with self._lock:
            self._used -= size
        return True
