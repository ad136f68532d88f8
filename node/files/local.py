"""Adding files to and getting files from the local chunk store (specs/chunks.md §6 Manifest, §8 Chunk store on disk).

The I/O glue around the pure encoder and decoder, as a bounded pipeline of
threads (hashlib, AES-GCM and file I/O release the GIL, so crypto runs on
several cores and overlaps the disk):

* add: the calling thread reads whole chunks into ``SEAL_DEPTH`` buffers,
  ``SEAL_THREADS`` threads seal them (encrypt + hash), and the store's
  threads write and fdatasync up to ``STREAM_WINDOW`` chunk files
  (``ChunkStore.put_stream``);
* get: ``OPEN_THREADS`` threads read and open (verify + decrypt) up to
  ``OPEN_DEPTH`` data chunks ahead, the calling thread takes them in file
  order through the decoder, one writer thread writes the output (a queue of
  ``PIPELINE_DEPTH`` chunks) and one thread fdatasyncs it every
  ``GET_SYNC_BYTES``.

Memory stays at a few chunks whatever the file size.
"""

from __future__ import annotations

import mimetypes
import os
import queue
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from node.files._malloc import keep_chunk_buffers
from node.runtime.config import load_secret
from node.store import ChunkStore
from protocol.chunks import (
    DataSlot,
    KEY_SIZE,
    CdcFileEncoder,
    Chunker,
    ConvergentKeyHasher,
    FileDecoder,
    FileEncoder,
    Link,
    LocalChunkError,
    SealedData,
    check_chunk_size,
    check_fanout,
    chunk_secret_for_add,
)

# Data chunks being sealed at once on add, each with its own plaintext buffer
# (encrypting and hashing release the GIL, so they run on several cores).
SEAL_DEPTH = 4
# Threads sealing data chunks on add.
SEAL_THREADS = 2
# Bytes read at once when adding with content-defined chunks (the chunker
# keeps less than CDC_MAX more; specs/chunks.md §8.4 Reading files out).
CDC_READ_BYTES = 1024 * 1024
# Data chunks being read and opened (verified, decrypted) at once on get.
OPEN_DEPTH = 4
# Threads reading and opening data chunks on get.
OPEN_THREADS = 2
# Plaintext chunks in flight between the decrypting thread and the writer on get.
PIPELINE_DEPTH = 4
# Most chunks the get writer takes from the queue at once.
WRITE_BATCH = 8
# While writing a fetched file, fdatasync it in the background every this
# many bytes (one sync in flight at a time), so the final fsync finds the
# file already durable but for the last stretch.  Starting writeback alone
# (posix_fadvise) is not enough: on the reference VM the device cache flush,
# not the writeback, is what costs, ~0.4 s per 256 MiB flushed at once.
GET_SYNC_BYTES = 16 * 1024 * 1024
CONVERGENCE_FILE = "convergence.key"
CONVERGENCE_SECRET_SIZE = 32

Progress = Callable[[int], None]
# Called with each new chunk of an add (address, sealed bytes) just before the store takes it: a
# networked add pushes it from there, with no second read (node/files/network.py).  It must not
# change the bytes, which the store's threads are writing meanwhile.
Sealed = Callable[[bytes, bytearray], None]


@dataclass(frozen=True, slots=True)
class AddResult:
    """What :func:`add_file` stored."""

    link: Link
    size: int
    chunks: int
    new_chunks: int
    name: str | None
    media_type: str | None
    # Every chunk of the file once, in the order stored (data and manifest chunks, the root last),
    # each addressed by the hash the sealer took: a networked add pins and pushes exactly these
    # without walking and re-hashing its own fresh copy (node/files/network.py).
    addresses: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class GetResult:
    """What :func:`get_file` wrote."""

    path: Path
    size: int
    chunks: int
    name: str | None
    media_type: str | None


def load_convergence_secret(data_dir: Path) -> bytes:
    """The per-user convergence secret, created (0600) on first use."""
    return load_secret(data_dir / CONVERGENCE_FILE, CONVERGENCE_SECRET_SIZE, "convergence secret")


class _Writer:
    """One background thread applying ``sink`` to batches of queued items.

    Errors in the thread are re-raised in the caller by :meth:`put` or
    :meth:`close`, so nothing fails silently.
    """

    def __init__(self, sink: Callable[[list[object]], None]) -> None:
        self._sink = sink
        self._queue: queue.Queue[object] = queue.Queue(maxsize=PIPELINE_DEPTH)
        self._error: BaseException | None = None
        self._stop = object()
        self._thread = threading.Thread(target=self._run, name="mu-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._stop:
                return
            batch = [item]
            while len(batch) < WRITE_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is self._stop:
                    self._run_batch(batch)
                    return
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(self, batch: list[object]) -> None:
        if self._error is None:
            try:
                self._sink(batch)
            except BaseException as exc:  # handed to the caller thread
                self._error = exc

    def put(self, item: object) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def close(self) -> None:
        """Wait for every queued item to be written; re-raise a writer error."""
        self._queue.put(self._stop)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _read_into(fd: int, buf: bytearray) -> int:
    """Fill ``buf`` from ``fd`` as far as the file allows; return bytes read."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _recorded(items: Iterator[tuple[bytes, bytearray]], addresses: dict[bytes, None],
              on_sealed: Sealed | None) -> Iterator[tuple[bytes, bytearray]]:
    """``items`` unchanged, noting each address (once) in ``addresses`` and handing it to ``on_sealed``."""
    for address, chunk in items:
        if address not in addresses:
            addresses[address] = None
            if on_sealed is not None:
                on_sealed(address, chunk)
        yield address, chunk


def add_file(
    store: ChunkStore,
    path: Path,
    *,
    chunk_secret: bytes | None = None,
    convergence_secret: bytes | None = None,
    chunk_size: int | None = None,
    name: str | None = None,
    media_type: str | None = None,
    fanout: int | None = None,
    progress: Progress | None = None,
    on_sealed: Sealed | None = None,
) -> AddResult:
    """Encrypt ``path`` into ``store``; return its link once every chunk is durable.

    By default the file is cut into content-defined chunks (format 3,
    specs/chunks.md §6.6): with ``chunk_secret`` (32 bytes, e.g. a folder's)
    every chunk and the root are keyed by their content under that secret,
    so equal chunks of any file added under it are stored once; with
    ``convergence_secret`` (``mu add --convergent``) the same under a chunk
    secret derived from it; otherwise under a random file key.

    ``chunk_size`` asks for fixed-size chunks instead (format 2): the file
    key is random, or derived from the plaintext and ``convergence_secret``
    (one extra read pass).

    ``on_sealed`` sees each chunk once, data before the manifests naming
    them, the root last, before it is durable: only this function's return
    says the whole file is.

    Raises:
        protocol.chunks.LocalChunkError: bad parameters (sizes, secret length, name).
    """
    if name is None:
        name = Path(path).name or None
    if media_type is None and name:
        media_type = mimetypes.guess_type(name)[0]
    if chunk_size is None:
        if chunk_secret is None and convergence_secret is not None:
            chunk_secret = chunk_secret_for_add(convergence_secret)
        if chunk_secret is None:
            cdc = CdcFileEncoder(secrets.token_bytes(KEY_SIZE), name=name, media_type=media_type, fanout=fanout)
        else:
            cdc = CdcFileEncoder(chunk_secret=chunk_secret, name=name, media_type=media_type, fanout=fanout)
        return _add_cdc(store, path, cdc, progress, on_sealed)
    if chunk_secret is not None:
        raise LocalChunkError("a chunk secret needs content-defined chunks: give no chunk size")
    check_chunk_size(chunk_size)
    fanout = check_fanout(chunk_size, fanout)
    keep_chunk_buffers()
    fd = os.open(path, os.O_RDONLY)
    sealers = ThreadPoolExecutor(max_workers=SEAL_THREADS, thread_name_prefix="mu-seal")
    try:
        if convergence_secret is None:
            key = secrets.token_bytes(KEY_SIZE)
        else:
            hasher = ConvergentKeyHasher(
                convergence_secret, chunk_size=chunk_size, fanout=fanout, name=name, media_type=media_type
            )
            buf = bytearray(chunk_size)
            while n := _read_into(fd, buf):
                hasher.update(memoryview(buf)[:n])
            key = hasher.file_key()
            os.lseek(fd, 0, os.SEEK_SET)
        encoder = FileEncoder(key, chunk_size=chunk_size, name=name, media_type=media_type, fanout=fanout)

        def chunks() -> Iterator[tuple[bytes, bytearray]]:
            # This thread reads whole chunks into SEAL_DEPTH rotating buffers
            # and the sealer threads encrypt and hash them; results are taken
            # in file order, so the encoder builds the same tree as feed().
            free = deque(bytearray(chunk_size) for _ in range(SEAL_DEPTH))
            sealing: deque[tuple[int, int, bytearray, Future[tuple[bytes, bytearray]]]] = deque()
            more = True
            while True:
                while more and free:
                    buf = free.popleft()
                    n = _read_into(fd, buf)
                    more = n == chunk_size
                    if n:
                        index = encoder.next_data(n)
                        sealing.append((index, n, buf, sealers.submit(encoder.seal_data, index, memoryview(buf)[:n])))
                if not sealing:
                    break
                index, n, buf, future = sealing.popleft()
                address, chunk = future.result()
                free.append(buf)
                yield address, chunk
                # The manifest chunks come after the data chunks they name.
                yield from encoder.add_data(index, address)
                if progress is not None:
                    progress(n)
            # The root comes last, after every chunk it depends on.
            yield from encoder.finish()

        # The store's threads write and fdatasync up to STREAM_WINDOW chunks
        # meanwhile (the sealer already hashed each chunk to get its address:
        # no second hash).
        addresses: dict[bytes, None] = {}
        seen, new = store.put_stream(_recorded(chunks(), addresses, on_sealed), verify=False)
    finally:
        # No sealer may still be reading a buffer once this returns.
        sealers.shutdown(wait=True, cancel_futures=True)
        os.close(fd)
    return AddResult(encoder.link, encoder.size, seen, new, name, media_type, tuple(addresses))


def _add_cdc(store: ChunkStore, path: Path, encoder: CdcFileEncoder, progress: Progress | None,
             on_sealed: Sealed | None) -> AddResult:
    """:func:`add_file` with content-defined chunks: cut here, seal on ``SEAL_THREADS`` threads.

    This thread reads ``CDC_READ_BYTES`` at a time and cuts (the gear loop
    runs without the GIL); up to ``SEAL_DEPTH`` data chunks are sealed at
    once; addresses enter the tree in file order, so the chunks are those
    of ``encoder.feed`` (specs/chunks.md §6.3).
    """
    keep_chunk_buffers()
    chunker = Chunker(encoder.cdc)
    fd = os.open(path, os.O_RDONLY)
    sealers = ThreadPoolExecutor(max_workers=SEAL_THREADS, thread_name_prefix="mu-seal")
    try:
        def chunks() -> Iterator[tuple[bytes, bytearray]]:
            block = bytearray(CDC_READ_BYTES)
            cut: deque[bytes] = deque()  # cut, not yet being sealed
            sealing: deque[tuple[int, Future[SealedData]]] = deque()
            more = True
            while True:
                while more and len(cut) < SEAL_DEPTH:
                    n = _read_into(fd, block)
                    more = n == len(block)
                    cut.extend(chunker.feed(memoryview(block)[:n]) if n else [])
                    if not more:
                        cut.extend(chunker.finish())
                while cut and len(sealing) < SEAL_DEPTH:
                    plain = cut.popleft()
                    index = encoder.next_data(len(plain))
                    sealing.append((index, sealers.submit(encoder.seal_data, index, plain)))
                if not sealing:
                    break
                index, future = sealing.popleft()
                sealed = future.result()
                yield sealed.address, sealed.chunk
                # The manifest chunks come after the data chunks they name.
                yield from encoder.add_data(index, sealed)
                if progress is not None:
                    progress(sealed.length)
            # The root comes last, after every chunk it depends on.
            yield from encoder.finish()

        addresses: dict[bytes, None] = {}
        seen, new = store.put_stream(_recorded(chunks(), addresses, on_sealed), verify=False)
    finally:
        # No sealer may still be reading a chunk once this returns.
        sealers.shutdown(wait=True, cancel_futures=True)
        os.close(fd)
    return AddResult(encoder.link, encoder.size, seen, new, encoder.name, encoder.media_type, tuple(addresses))


class _BackgroundSync:
    """fdatasyncs of the file being written, on their own thread, one at a time.

    The writer calls :meth:`poke` after each write; once ``GET_SYNC_BYTES``
    more bytes were written and no sync is running, a new fdatasync starts.
    A failed sync is re-raised by the next :meth:`poke` or by :meth:`wait`.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._synced = 0  # bytes written when the running or last sync started
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mu-get-sync")
        self._running: Future[None] | None = None

    def poke(self, written: int) -> None:
        if self._running is not None:
            if not self._running.done():
                return
            self._running.result()
            self._running = None
        if written - self._synced >= GET_SYNC_BYTES:
            self._synced = written
            self._running = self._pool.submit(os.fdatasync, self._fd)

    def wait(self) -> None:
        """Wait for the running sync (re-raising its error) and stop the thread."""
        try:
            if self._running is not None:
                self._running.result()
        finally:
            self._pool.shutdown(wait=True)


def get_file(store: ChunkStore, link: Link, dest: Path, *, progress: Progress | None = None) -> GetResult:
    """Decrypt the file ``link`` names from ``store`` into ``dest``, atomically.

    The plaintext goes to a temp file next to ``dest``, which is fsynced and
    renamed over ``dest`` only after the last chunk verified; on any error
    the temp file is removed and ``dest`` is untouched.

    Raises:
        node.store.ChunkNotFound: a chunk is not in the store.
        protocol.chunks.IntegrityError: a chunk failed verification or the key is wrong.
    """
    decoder = FileDecoder.from_link(link)
    keep_chunk_buffers()
    dest = Path(dest)
    directory = dest.parent if str(dest.parent) else Path(".")
    tmp = directory / f".{dest.name}.mu-partial-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    written = 0
    syncer = _BackgroundSync(fd)

    def sink(batch: list[object]) -> None:
        nonlocal written
        for plain in batch:
            view = memoryview(plain)  # type: ignore[arg-type]
            while view:
                view = view[os.write(fd, view):]
            written += len(plain)  # type: ignore[arg-type]
        syncer.poke(written)

    def fetch_open(slot: DataSlot) -> bytearray:
        return decoder.open_data(slot, store.get(slot.address, verify=False))

    chunks = 0
    openers = ThreadPoolExecutor(max_workers=OPEN_THREADS, thread_name_prefix="mu-open")
    try:
        try:
            writer = _Writer(sink)
            try:
                # Data chunks are read and opened OPEN_DEPTH ahead on the
                # opener threads and taken back in file order; manifest
                # chunks (few) are fed here.  Nothing reaches the writer
                # before the decoder verified it.
                opening: deque[tuple[DataSlot, Future[bytearray]]] = deque()
                while True:
                    for slot in decoder.data_slots(OPEN_DEPTH - len(opening), skip=len(opening)):
                        opening.append((slot, openers.submit(fetch_open, slot)))
                    if opening:
                        slot, future = opening.popleft()
                        plain = decoder.accept_data(slot, future.result())
                    elif (address := decoder.next_address()) is not None:
                        plain = decoder.feed(store.get(address, verify=False))
                    else:
                        break
                    chunks += 1
                    if plain:
                        writer.put(plain)
                        if progress is not None:
                            progress(len(plain))
            finally:
                openers.shutdown(wait=True, cancel_futures=True)
                writer.close()
        finally:
            syncer.wait()  # no sync may outlive the fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    manifest = decoder.manifest
    assert manifest is not None  # the root is always fed first
    return GetResult(dest, manifest.size, chunks, manifest.name, manifest.media_type)
