"""Streaming durable writes behind ChunkStore.put_stream (specs/chunks.md §8.2).

Adding a file produces chunks one at a time from the encoder; writing them
in fixed batches (``put_many``) leaves the disk idle while the next batch is
encrypted and the encoder idle while a batch is fsynced.  Here the encoder
runs in the calling thread and every chunk goes to the store's write threads
as soon as it exists, with at most ``window`` writes outstanding and at most
``STREAM_BUFFER_BYTES`` of chunk bytes not yet copied into their temp files.
A write thread drops its chunk's bytes once they are in the temp file, so a
wide window of fdatasyncs in flight (which is what makes the disk fast: they
share journal commits) costs open files, not memory.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path

from ._errors import check_address
from ._writer import Chunk, ChunkWriter, fsync_pool

# Chunk writes outstanding at once (open temp files being fsynced), chunk
# bytes handed to write threads but not yet copied into a temp file (the only
# chunk bytes put_stream holds in memory), and stored chunks between directory
# fsyncs + index commits (specs/chunks.md §8.2).
STREAM_WINDOW = 64
STREAM_BUFFER_BYTES = 16 * 1024 * 1024
STREAM_CHECKPOINT = 256


class _ByteBudget:
    """Chunk bytes handed to write threads and not yet written (bounded)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._cond = threading.Condition()

    def take(self, size: int) -> None:
        """Wait until ``size`` more bytes fit (one chunk always fits alone)."""
        with self._cond:
            while self._held and self._held + size > self._limit:
                self._cond.wait()
            self._held += size

    def give_back(self, size: int) -> None:
        with self._cond:
            self._held -= size
            self._cond.notify_all()


def put_stream(
    writer: ChunkWriter,
    items: Iterable[tuple[bytes, Chunk]],
    *,
    verify: bool = True,
    window: int = STREAM_WINDOW,
) -> tuple[int, int]:
    """Store a stream of chunks durably; return (chunks seen, chunks new).

    Like ``put_many`` chunk by chunk (temp file, fdatasync, link), but
    with no barrier between groups: the caller's iterator runs (and may
    encrypt) in this thread while up to ``window`` chunk writes proceed on
    the store's threads, so the disk never waits for the producer and the
    producer waits only when ``window`` writes are outstanding or
    ``STREAM_BUFFER_BYTES`` of chunk bytes still wait to be written.
    Every ``STREAM_CHECKPOINT`` stored chunks, and at the end, the touched shard
    directories are fsynced and the index rows committed; when this
    returns every chunk is on disk (specs/chunks.md §8.2).
    """
    writer.dirty.mark()
    budget = _ByteBudget(STREAM_BUFFER_BYTES)
    inflight: deque[tuple[Path, bytes, int, Future[bool]]] = deque()
    done: list[tuple[Path, bytes, int]] = []
    seen = new = 0
    failure: BaseException | None = None

    def settle_oldest() -> None:
        nonlocal failure
        final, address, size, future = inflight.popleft()
        try:
            stored = future.result()
        except BaseException as exc:
            stored = False
            failure = failure or exc
        if stored:
            done.append((final, address, size))
        else:
            writer.space.release(size)

    try:
        for address, data in items:
            seen += 1
            address = check_address(address)
            final = writer.admit(address, data, verify)
            if final is None:
                continue
            size = len(data)
            taken = False
            try:
                budget.take(size)
                taken = True
                future = fsync_pool().submit(writer.write_taken, final, address, [data], budget.give_back)
            except BaseException:
                if taken:
                    budget.give_back(size)
                writer.space.release(size)
                raise
            del data  # the write thread owns the bytes now
            inflight.append((final, address, size, future))
            while len(inflight) > window or (inflight and inflight[0][3].done()):
                settle_oldest()
            if failure is not None:
                break
            if len(done) >= STREAM_CHECKPOINT:
                batch, done = done, []
                new += writer.commit_stored(batch)
    except BaseException as exc:
        failure = failure or exc
    finally:
        while inflight:
            settle_oldest()
        new += writer.commit_stored(done)
    if failure is not None:
        raise failure
    return seen, new
