"""Durable chunk writes: temp file, fdatasync, hard link, directory fsync (specs/chunks.md §8.2 Writing).

A chunk file appears under its final name only once its bytes are fsynced,
and the new name is made durable (directory fsync) before a put returns, so
a crash at any point leaves either no chunk or the whole chunk.  The index
rows follow the files; the index's dirty flag (:class:`DirtyFlag`) is set
before the first file of a session appears, so a crash between a file and
its row is repaired on the next open.

The parts here are owned by :class:`~node.store.ChunkStore`, which builds
them and hands each the others it needs: the quota account
(:class:`StoreSpace`), the dirty flag and the writer itself.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ._errors import ChunkMismatch, StoreFull, check_address
from ._index import ChunkIndex

# Largest chunk the store accepts: 4 MiB of data plus the GCM tag
# (specs/chunks.md §3 Definitions and defaults, §5 Chunks), with headroom for manifest chunks.
MAX_CHUNK_BYTES = 4 * 1024 * 1024 + 1024
# Chunk files written and fsynced at the same time (one pool per process):
# each thread spends most of its time waiting in fdatasync, and the more of
# those are in flight, the more of them share one journal commit and device
# flush (measured on the reference VM: 8 threads ~300 MiB/s, 32 ~450 MiB/s).
# Bounds threads and open files, not memory (see STREAM_BUFFER_BYTES).
FSYNC_PARALLELISM = 32
# A host's paid PUTs are written past the page cache (O_DIRECT) from
# page-aligned buffers, in whole DIRECT_ALIGN blocks (the tail, under one
# block, through the cache): a host keeps what peers send and seldom reads it
# soon, and each write through the cache fills fresh pages, which on the
# reference VM cost more CPU than the rest of the PUT (networked add +15-20%,
# scripts/bench-vs-bittorrent).  The node's own chunks (an add, a fetch kept)
# still go through the cache, where reading them back is fast.  At most
# DIRECT_BUFFERS buffers per process (each up to MAX_CHUNK_BYTES resident once
# used); a write finding none free goes through the cache.
DIRECT_ALIGN = 4096
DIRECT_BUFFERS = 8
O_DIRECT: int = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere every write goes through the cache
# Where chunks are written before they are linked to their final name.
TMP_DIR = "tmp"
# The index flag set while chunks may be on disk without their index rows.
DIRTY_FLAG = "dirty"

Chunk = bytes | bytearray | memoryview

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()

log = logging.getLogger("mu.store")


def fsync_pool() -> ThreadPoolExecutor:
    """Threads shared by all stores for concurrent writes and fsyncs."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=FSYNC_PARALLELISM, thread_name_prefix="mu-store-sync")
        return _POOL


class DirectBuffers:
    """Page-aligned buffers for O_DIRECT chunk writes, at most ``count``, reused; thread-safe."""

    def __init__(self, count: int = DIRECT_BUFFERS, size: int = MAX_CHUNK_BYTES) -> None:
        self.size = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN
        self._spare = count
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap | None:
        """A free buffer, a new one while fewer than ``count`` exist, else None."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if not self._spare:
                return None
            self._spare -= 1
        return mmap.mmap(-1, self.size)  # anonymous: page-aligned

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buffer)


_BUFFERS = DirectBuffers()


def _write_direct(fd: int, view: memoryview, buffer: mmap.mmap) -> int:
    """Write ``view``'s whole DIRECT_ALIGN blocks to ``fd`` (opened O_DIRECT) through ``buffer``,
    then clear O_DIRECT; return the bytes written (the rest is a tail under one block).

    Raises:
        OSError(EINVAL): the filesystem refused the direct write (nothing counted as written).
    """
    aligned = len(view) - len(view) % DIRECT_ALIGN
    buffer[:aligned] = view[:aligned]
    with memoryview(buffer) as whole:
        block = whole[:aligned]
        done = 0
        while done < aligned:
            done += os.write(fd, block[done:])
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)
    return aligned


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StoreSpace:
    """Chunk bytes held against the quota; thread-safe."""

    def __init__(self, quota_bytes: int | None) -> None:
        self.quota_bytes = quota_bytes
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, address: bytes, size: int) -> None:
        """Count ``size`` more bytes for ``address``.

        Raises:
            StoreFull: the quota would be exceeded.
        """
        with self._lock:
            if self.quota_bytes is not None and self._used + size > self.quota_bytes:
                raise StoreFull(
                    f"store full: chunk {address.hex()} ({size} bytes) would exceed the quota of "
                    f"{self.quota_bytes} bytes ({self._used} used)",
                    address,
                )
            self._used += size

    def release(self, size: int) -> None:
        with self._lock:
            self._used -= size

    def reset(self, total: int) -> None:
        """Set the count to what the files hold (after a rebuild)."""
        with self._lock:
            self._used = total


class DirtyFlag:
    """The index's dirty flag: set while chunk files may lack their index rows.

    Set once, before this store's first write or delete; cleared at a clean
    close.  Found set at open, it means the last user crashed (specs/chunks.md
    §8.3 Index).
    """

    def __init__(self, index: ChunkIndex) -> None:
        self._index = index
        self.marked = False

    def found_set(self) -> bool:
        """True if the index says the last user did not close cleanly."""
        return bool(self._index.get_flag(DIRTY_FLAG))

    def mark(self) -> None:
        if not self.marked:
            self._index.set_flag(DIRTY_FLAG, 1)
            self.marked = True

    def restore(self) -> None:
        """Write back this store's own state (after a rebuild reconciled the index)."""
        self._index.set_flag(DIRTY_FLAG, 1 if self.marked else 0)

    def clear(self) -> None:
        """At a clean close: every file written has its row."""
        if self.marked:
            self._index.set_flag(DIRTY_FLAG, 0)


class ChunkWriter:
    """Writes and deletes chunk files under ``root`` and keeps the index and quota in step.

    Args:
        root: the store directory.
        index: the store's index, given the rows of chunks written.
        space: the quota account, charged before a write and refunded on failure.
        dirty: the index's dirty flag, set before the first file appears.
    """

    def __init__(self, root: Path, index: ChunkIndex, space: StoreSpace, dirty: DirtyFlag) -> None:
        self.root = root
        self.tmp = root / TMP_DIR
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.index = index
        self.space = space
        self.dirty = dirty
        # Off for good after the filesystem refuses O_DIRECT once (tmpfs before Linux 6.6, some FUSE).
        self.direct = O_DIRECT != 0

    def path_of(self, address: bytes) -> Path:
        """Where the chunk with ``address`` lives (whether or not it exists)."""
        hexa = check_address(address).hex()
        return self.root / hexa[:2] / hexa

    def admit(self, address: bytes, data: Chunk, verify: bool) -> Path | None:
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
        self.space.reserve(address, size)
        return final

    def put_many(self, items: Iterable[tuple[bytes, Chunk]], *, verify: bool = True,
                 paid_until: int | None = None, direct: bool = False) -> int:
        """Store chunks durably; return how many were new (see ``ChunkStore.put_many``).

        ``paid_until``: the new chunks' rows get that retention, committed
        durably with them (one index commit for a paid PUT, specs/chunks.md
        §8.6); chunks already held are left as they are.  ``direct``: write
        them past the page cache (a host's paid PUTs, see DIRECT_ALIGN).
        """
        # Flag the index as possibly stale before any file appears, so a crash
        # between a file's link and its index row is repaired on next open.
        self.dirty.mark()
        to_write: list[tuple[Path, bytes, Chunk]] = []
        failure: BaseException | None = None
        for address, data in items:
            try:
                address = check_address(address)
                final = self.admit(address, data, verify)
            except BaseException as exc:
                failure = exc  # chunks before this one are still stored
                break
            if final is not None:
                to_write.append((final, address, data))
        # Write the batch concurrently: fdatasyncs issued together share
        # journal commits and device flushes (group commit), which a
        # one-at-a-time loop cannot (specs/chunks.md §8.2 Writing).  A single
        # chunk (a PUT) is written in this thread: a pool hop buys it nothing.
        new: list[tuple[Path, bytes, int]] = []
        for (final, address, data), outcome in zip(to_write, self._write_all(to_write, direct)):
            if isinstance(outcome, BaseException):
                failure = failure or outcome
            if outcome is True:
                new.append((final, address, len(data)))
            else:
                self.space.release(len(data))
        count = self.commit_stored(new, paid_until=paid_until)
        if failure is not None:
            raise failure
        return count

    def _write_all(self, jobs: list[tuple[Path, bytes, Chunk]], direct: bool) -> list[bool | BaseException]:
        """``write_file`` of each job, concurrently on the pool past one; each one's result or error."""
        if len(jobs) == 1:
            try:
                return [self.write_file(*jobs[0], direct=direct)]
            except BaseException as exc:
                return [exc]
        outcomes: list[bool | BaseException] = []
        for future in [fsync_pool().submit(self.write_file, *job, direct=direct) for job in jobs]:
            try:
                outcomes.append(future.result())
            except BaseException as exc:
                outcomes.append(exc)
        return outcomes

    def commit_stored(self, stored: list[tuple[Path, bytes, int]], *, paid_until: int | None = None) -> int:
        """Fsync the shard directories of freshly linked chunks, then index them (with ``paid_until``)."""
        if not stored:
            return 0
        try:
            dirs = {final.parent for final, _, _ in stored}
            if len(dirs) == 1:
                _fsync_dir(next(iter(dirs)))
            else:
                for done in [fsync_pool().submit(_fsync_dir, d) for d in dirs]:
                    done.result()
        finally:
            self.index.add([(address, size) for _, address, size in stored], int(time.time()), paid_until=paid_until)
        return len(stored)

    def write_file(self, final: Path, address: bytes, data: Chunk, *, direct: bool = False) -> bool:
        """Write one chunk file atomically; False if another writer stored it first."""
        return self.write_taken(final, address, [data], None, direct=direct)

    def write_taken(self, final: Path, address: bytes, box: list[Chunk], written: Callable[[int], None] | None,
                    *, direct: bool = False) -> bool:
        """Like :meth:`write_file`, taking the bytes out of ``box``; past the page cache with ``direct``
        if the filesystem allows it.

        The bytes are dropped as soon as they are in the temp file, before
        the slow fdatasync, and ``written(size)`` is called then (also if the
        write fails), so a caller can bound the chunk bytes it has handed to
        write threads rather than the writes outstanding (put_stream).
        """
        data = box.pop()
        view: memoryview | None = None
        size = len(data)
        tmp = self.tmp / f"{address.hex()}.{secrets.token_hex(4)}.tmp"
        buffer = _BUFFERS.take() if direct and self.direct and size >= DIRECT_ALIGN else None
        try:
            try:
                fd, is_direct = self._create(tmp, direct=buffer is not None)
                try:
                    view = memoryview(data).cast("B")
                    if is_direct:
                        assert buffer is not None
                        view = view[self._write_blocks(fd, view, buffer):]
                    while view:
                        view = view[os.write(fd, view):]
                except BaseException:
                    os.close(fd)
                    raise
            finally:
                if buffer is not None:
                    _BUFFERS.give(buffer)
                del data  # drop the bytes before the slow fdatasync
                view = None
                if written is not None:
                    written(size)
            try:
                # fdatasync covers the data and the file size, all a reader needs.
                os.fdatasync(fd)
            finally:
                os.close(fd)
            try:
                # link() never replaces: of two concurrent writers (threads or
                # processes) exactly one wins, so accounting stays exact.
                self._link(tmp, final)
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

    def _create(self, tmp: Path, *, direct: bool) -> tuple[int, bool]:
        """Create the temp file exclusively, O_DIRECT if ``direct`` and the filesystem allows it;
        the descriptor, and whether it is O_DIRECT."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if direct:
            try:
                return os.open(tmp, flags | O_DIRECT, 0o644), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._no_direct(exc)
                tmp.unlink(missing_ok=True)  # some filesystems create the file before refusing
        return os.open(tmp, flags, 0o644), False

    def _write_blocks(self, fd: int, view: memoryview, buffer: mmap.mmap) -> int:
        """``_write_direct``, or 0 with the file emptied and O_DIRECT off if the filesystem refuses it."""
        try:
            return _write_direct(fd, view, buffer)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._no_direct(exc)
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            return 0

    def _no_direct(self, exc: OSError) -> None:
        if self.direct:
            self.direct = False
            log.info("chunk writes go through the page cache in %s: O_DIRECT refused (%s)", self.root, exc)

    @staticmethod
    def _link(tmp: Path, final: Path) -> None:
        """``os.link``, creating the shard directory the first time (not a mkdir per chunk)."""
        try:
            os.link(tmp, final)
        except FileNotFoundError:
            final.parent.mkdir(exist_ok=True)
            os.link(tmp, final)

    def delete(self, address: bytes) -> bool:
        """Remove a chunk file and its row; return False if it was not stored."""
        path = self.path_of(address)
        self.dirty.mark()
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            self.index.remove(bytes(address))
            return False
        self.index.remove(bytes(address))
        self.space.release(size)
        return True
