"""Fetch a file from many hosts at once (specs/network.md §4 The download algorithm,
§5 Writing the file, resuming).

The I/O around :class:`protocol.fetch.FetchScheduler` and the pure
:class:`protocol.chunks.FileDecoder`: the decoder says which chunks come
next (``upcoming``), the scheduler spreads them over the hosts, one trio task
per outstanding request asks a :class:`ChunkSource`, verified chunks wait in
a bounded reorder buffer until the decoder takes them in file order (a data
chunk is decrypted as soon as it is accepted, in any order), and the
plaintext goes to ``DEST.mu-part``, renamed over ``DEST`` once the last
chunk is in.  With a local :class:`node.store.ChunkStore` chunks already there are
not fetched again, and every fetched chunk is kept there (pinning, and what
makes an interrupted fetch resume without paying twice) unless the caller
says ``keep_chunks=False``: a plain ``mu get`` keeps only the manifest
chunks, writes each data chunk's plaintext once, and resumes from its part
file instead (specs/network.md §5 Writing the file, resuming).

:func:`fetch_raw` is the same machinery driven by the keyless
:class:`protocol.chunks.RawWalker` (a verify cap, specs/chunks.md §6.5 Walking with the bare root):
from a bare root it fetches and verifies every ciphertext chunk into the
store without decrypting anything.

A :class:`ChunkSource` is one host as seen by the fetcher: its node ID, its
retrieval price, and ``get_chunk``, which pays and asks for one chunk (the
paid exchange of specs/payments.md over a transport session).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import trio

from node.exchange.paying import PaidBadChunk, PaidPeers, Tally, logged_if_slow
from node.files._output import PlainWriter
from node.store import ChunkCorrupt, ChunkNotFound, ChunkStore
from node.transport import BadChunk, RequestError, Session, TransportError
from protocol.chunks import TAG_SIZE, DataSlot, FileDecoder, IntegrityError, Link, RawWalker
from protocol.payments import Kind, PaymentError, PriceTooHigh
from protocol.fetch import (
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_WINDOW,
    MAX_HOSTS,
    FetchScheduler,
    Outcome,
    Progress,
    Request,
)
from protocol.wire import ErrorCode

log = logging.getLogger("mu.fetch")

# Chunks queued ahead of the decoder at most; bounds the reorder buffer and so
# the fetcher's memory (LOOKAHEAD × chunk size, 16 MiB of 1 MiB chunks).  At
# 32, a 1 GiB fetch from 3 hosts (out of order, so the buffer fills) peaked at
# 149-154 MiB of RSS, over issue 22's 150 MiB.  At 24, a get from 3 hosts was
# about 6% faster (behind a slow answer, a trace at 16 had mostly 1 to 9
# requests in flight) but a 256 MiB get's peak RSS reached 146 MiB.
LOOKAHEAD = 16
# Verified chunks waiting to be written to the local store at most.
STORE_QUEUE = 8
# With a resolver that looks holders up, chunks are queued in batches of this
# many (their holders looked up together, specs/network.md §3 Placement) while
# at least LOOKAHEAD // 2 chunks are still queued ahead of the decoder; with
# holders computed from a complete view, each chunk as soon as there is room.
QUEUE_BATCH = 8
PART_SUFFIX = ".mu-part"


class FetchFailed(Exception):
    """The download cannot finish: ``address`` names a chunk no usable host could serve."""

    def __init__(self, message: str, address: bytes | None = None) -> None:
        super().__init__(message)
        self.address = address


class SourceError(Exception):
    """One request to a host failed (error reply, unknown chunk, refused payment)."""


class SourceMissing(SourceError):
    """The host answered that it does not hold the chunk (NOT_FOUND): a miss, not a failure of the host."""


def _refused(exc: RequestError) -> SourceError:
    """The source error for a host's ERROR reply: NOT_FOUND is a miss (specs/network.md §4 Outcomes)."""
    return (SourceMissing if exc.code == ErrorCode.NOT_FOUND else SourceError)(str(exc))


class SourceGone(SourceError):
    """The host is unreachable: every request to it fails."""


class SourceLied(SourceError):
    """The host sent bytes that are not the chunk (caught by the source itself).

    ``paid`` is what went with the request; it is counted lost.
    """

    def __init__(self, message: str, paid: int = 0) -> None:
        super().__init__(message)
        self.paid = paid


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a host returned: the bytes, the sats paid for this request, and
    whether the source already checked SHA-256(data) == address."""

    data: bytes
    paid: int
    verified: bool = False


class ChunkSource(Protocol):
    """One host a chunk can be fetched from.

    ``spent`` is every sat its requests signed so far, counted as each
    payment is signed: also those of requests the fetcher gave up, which
    return no ``Fetched`` (0 for a source that does not pay).
    """

    host_id: bytes
    price_per_mib: int

    @property
    def spent(self) -> int: ...

    async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
        """Pay for and fetch one chunk.  Raises SourceError, SourceLied or SourceGone.

        ``size`` is the chunk's stored size when its manifest says it (a data
        chunk): a paying source prices its request by it rather than by a guess.
        ``more`` is what the fetch still means to ask of its hosts after this
        chunk, in bytes: a paying source may open the channel it will need
        ahead of need (specs/payments.md §Channel recovery, "Funding ahead").
        """
        ...


class SessionSource:
    """A host reached through a transport session (specs/wire.md §6 Messages, GET_CHUNK).

    Asks without payment: it is the source for hosts that serve for free
    (within their allowance); :class:`PaidSource` pays.
    """

    spent = 0  # it pays nothing

    def __init__(self, session: Session, price_per_mib: int = 0) -> None:
        self.session = session
        self.host_id = session.peer_node_id
        self.price_per_mib = price_per_mib

    async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
        try:
            # Session.get_chunk raises BadChunk unless SHA-256(bytes) == address.
            return Fetched(await self.session.get_chunk(address), 0, verified=True)
        except BadChunk as exc:
            raise SourceLied(str(exc)) from None
        except RequestError as exc:
            raise _refused(exc) from None
        except TransportError as exc:  # closed or broken session
            raise SourceGone(str(exc)) from None


class PaidSource:
    """A host paid per chunk through :class:`node.exchange.paying.PaidPeers` (specs/payments.md Part 2)."""

    def __init__(self, peers: PaidPeers, session: Session, price_per_mib: int) -> None:
        self.peers = peers
        self.session = session
        self.host_id = session.peer_node_id
        self.price_per_mib = price_per_mib
        self.tally = Tally()

    @property
    def spent(self) -> int:
        return self.tally.signed

    @classmethod
    async def open(cls, peers: PaidPeers, session: Session) -> PaidSource:
        """The source for ``session``'s host, its terms verified (raises PriceTooHigh above our maximum)."""
        link = await peers.link(session)
        return cls(peers, session, link.terms.price_per_mib_get)

    async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
        try:
            data, paid = await self.peers.request(self.session, Kind.GET, address, size=size, tally=self.tally,
                                                  more=more)
        except PaidBadChunk as exc:
            raise SourceLied(str(exc), paid=exc.paid) from None
        except RequestError as exc:
            raise _refused(exc) from None
        except (PaymentError, PriceTooHigh) as exc:
            raise SourceError(str(exc)) from None
        except TransportError as exc:
            raise SourceGone(str(exc)) from None
        assert isinstance(data, (bytes, bytearray, memoryview))  # the transport's receive buffer
        return Fetched(data, paid, verified=True)  # type: ignore[arg-type]  # the transport hashed it


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchProgress:
    """A progress report: the scheduler's counts plus plaintext written and rate."""

    chunks: Progress
    bytes_written: int
    local_chunks: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Bytes fetched from hosts per second so far."""
        return self.chunks.bytes_done / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchResult:
    """``size`` is plaintext bytes written, or for :func:`fetch_raw` the ciphertext bytes verified."""

    path: Path | None
    size: int
    progress: FetchProgress
    banned: tuple[bytes, ...]
    chunks: int = 0
    data_chunks: int = 0


Candidates = Callable[[bytes], Sequence[bytes]]


class HostResolver(Protocol):
    """Finds the hosts of a chunk as it comes up (node/files/locate.py: DHT placement and providers)."""

    @property
    def looks_up(self) -> bool:
        """Whether ``ahead`` makes network lookups, so that chunks are worth queueing in batches."""
        ...

    async def ahead(self, addresses: list[bytes]) -> None:
        """Prepare the holders of chunks about to be queued, all at once (lookups run concurrently)."""
        ...

    async def holders(self, address: bytes, *, lookup: bool = False) -> list[ChunkSource]:
        """Sources that may hold ``address`` (possibly new ones); ``lookup`` forces a fresh search."""
        ...


async def fetch_file(link: Link, dest: Path | None, sources: Sequence[ChunkSource], *, max_price_per_mib: int,
                     candidates: Candidates | None = None, resolver: HostResolver | None = None,
                     store: ChunkStore | None = None, keep_chunks: bool = True,
                     window: int = DEFAULT_WINDOW, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                     on_progress: Callable[[FetchProgress], None] | None = None) -> FetchResult:
    """Fetch, verify and decrypt the file ``link`` names into ``dest``, atomically.

    With ``dest`` None only the chunks are kept (in ``store``): that is pinning.

    Args:
        sources: the hosts to ask.
        max_price_per_mib: hosts priced above it are never asked.
        candidates: host IDs that may hold a chunk address (default: every source).
        resolver: finds more hosts per chunk; their sources are added as they come.
        store: the node's chunk store: chunks found there are used, fetched ones kept.
        keep_chunks: False keeps only the manifest chunks in ``store``, not the data
            chunks, whose plaintext in ``dest`` is the copy kept: a failed fetch then
            leaves ``DEST.mu-part`` behind, and the next fetch to ``dest`` resumes from
            the part of it that seals to the file's chunks again.
        on_progress: called after every chunk.

    Raises:
        FetchFailed: some chunk has no usable host left.
        protocol.chunks.IntegrityError: verified chunks do not decrypt (wrong key).
    """
    keep_chunks = keep_chunks or dest is None  # pinning: the chunks go to the store, the plaintext nowhere
    run = _Fetch(FileDecoder.from_link(link), sources, max_price_per_mib, candidates, resolver, store, window, request_timeout,
                 on_progress, keep_chunks=keep_chunks)
    if dest is None:
        await run.run(_Discard())
        return FetchResult(path=None, size=run.written, progress=run.report(), banned=run.banned())
    dest = Path(dest)
    part = dest.with_name(dest.name + PART_SUFFIX)
    resume = not keep_chunks and part.exists()
    with open(part, "r+b" if resume else "wb") as out:
        writer: PlainWriter | None = None
        try:
            if resume:
                await trio.to_thread.run_sync(run.resume, out)
            writer = PlainWriter(out, part)
            await run.run(writer)
            last, writer = writer, None
            await trio.to_thread.run_sync(_finish, last, out, part, dest)  # one thread hop for the three
        except BaseException:
            if writer is not None:
                try:  # what was decoded stays in the part file, to resume from
                    writer.close()
                except OSError as exc:
                    log.warning("%s: the last plaintext was not written (%s)", part, exc)
            out.close()
            if keep_chunks or not (resume or run.written):  # else it is what a rerun resumes from
                part.unlink(missing_ok=True)
            raise
    return FetchResult(path=dest, size=run.written, progress=run.report(), banned=run.banned())


async def fetch_raw(root: bytes, store: ChunkStore, sources: Sequence[ChunkSource], *, max_price_per_mib: int,
                    candidates: Candidates | None = None, resolver: HostResolver | None = None,
                    window: int = DEFAULT_WINDOW, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                    on_progress: Callable[[FetchProgress], None] | None = None) -> FetchResult:
    """Fetch and verify every chunk of the file rooted at ``root`` into ``store``, without its key.

    The tree is walked through the manifests' cleartext headers
    (specs/chunks.md §6.5 Walking with the bare root); every chunk is checked against its address
    before it is kept. Chunks already in ``store`` are used, not fetched.

    Raises:
        FetchFailed: some chunk has no usable host left.
        protocol.chunks.IntegrityError: a manifest chunk that hashes correctly breaks the format.
    """
    walker = RawWalker(root)
    run = _Fetch(walker, sources, max_price_per_mib, candidates, resolver, store, window, request_timeout,
                 on_progress)
    await run.run(_Discard())
    return FetchResult(path=None, size=walker.stored_bytes, progress=run.report(), banned=run.banned(),
                       chunks=walker.chunks, data_chunks=walker.data_chunks)


async def fetch_into_store(link: Link, store: ChunkStore, *, max_price_per_mib: int,
                           resolver: HostResolver | None = None) -> FetchResult:
    """Every chunk of ``link``'s file into ``store``, each verified before it is kept.

    A read capability (a link with its key) is fetched as a pin is (:func:`fetch_file` without a
    destination: decrypted and checked, the plaintext dropped), so every data chunk's size is
    known from its manifest before it is asked for and its GET is priced exactly: a GET of unknown
    size is priced as 1 MiB, and refused when the chunk is bigger, which costs a resynchronisation
    and a request sent alone (specs/payments.md §Payer link states). A bare root is walked by
    :func:`fetch_raw`.

    Raises:
        FetchFailed: some chunk has no usable host left.
        protocol.chunks.IntegrityError: a chunk breaks the format, or (with the key) does not decrypt.
    """
    if link.key is not None:
        return await fetch_file(link, None, [], max_price_per_mib=max_price_per_mib, resolver=resolver, store=store)
    return await fetch_raw(link.root, store, [], max_price_per_mib=max_price_per_mib, resolver=resolver)


@dataclass(frozen=True, slots=True)
class _Opened:
    """A data chunk's decryption ended (``_open_soon``): its slot and plaintext, or None."""

    opened: tuple[DataSlot, bytearray] | None


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def _fsync_file(f: object) -> None:
    f.flush()  # type: ignore[attr-defined]
    os.fsync(f.fileno())  # type: ignore[attr-defined]


def _commit(part: Path, dest: Path) -> None:
    os.replace(part, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _finish(writer: PlainWriter, out: object, part: Path, dest: Path) -> None:
    """The last plaintext written, the part file fsynced, then renamed to ``dest`` durably.

    A failure before the rename leaves the part file (what a rerun resumes from).
    """
    writer.close()
    _fsync_file(out)
    _commit(part, dest)


class _Fetch:
    def __init__(self, decoder: FileDecoder | RawWalker, sources: Sequence[ChunkSource], max_price: int, candidates: Candidates | None,
                 resolver: HostResolver | None, store: ChunkStore | None, window: int, timeout: float,
                 on_progress: Callable[[FetchProgress], None] | None, *, keep_chunks: bool = True) -> None:
        self.decoder = decoder  # FileDecoder, or RawWalker for a keyless fetch: same interface
        self.sched = FetchScheduler(max_price_per_mib=max_price, window=window, request_timeout=timeout)
        self.sources = {s.host_id: s for s in sources}
        # Each source's ``spent`` when it joined, and the sats its results reported since: what it
        # spent beyond went with requests given up (cancelled), counted lost at the end.
        self.spent_before = {s.host_id: s.spent for s in sources}
        self.reported: dict[bytes, int] = {}
        for s in sources:
            self.sched.add_host(s.host_id, s.price_per_mib)
        static = [s.host_id for s in sources]
        self.candidates = candidates or (lambda address: static)
        self.resolver = resolver
        self.store = store
        self.keep_chunks = keep_chunks
        # queued or waiting data chunks not to be kept in the store (keep_chunks False)
        self.unkept: set[bytes] = set()
        self.on_progress = on_progress
        self.queued: dict[bytes, int] = {}  # address -> scheduler index, not yet arrived
        # queued data chunks' slots (FileDecoder only), from their manifest: a paid request is priced
        # by its stored size, and an accepted chunk is decrypted at once, out of order
        self.slots: dict[bytes, DataSlot] = {}
        # waiting for the decoder: the bytes, whether they were checked against their address
        # (every fetched chunk was: by its source or the scheduler; a stored one was not), and
        # the slot and plaintext of a data chunk decrypted on arrival (else None), whose bytes
        # are then not kept (None: ``_stored_bytes`` seals them again if they are wanted)
        self.ready: dict[bytes, tuple[bytes | None, bool, tuple[DataSlot, bytearray] | None]] = {}
        self.decoding = trio.CapacityLimiter(1)  # the decoder is fed by one worker thread at a time
        self.scopes: dict[int, trio.CancelScope] = {}
        self.looked_up: set[bytes] = set()  # queued chunks given their fresh lookup (so at most LOOKAHEAD)
        self.next_index = 0
        self.written = 0
        self.local = 0
        self.started = time.monotonic()
        capacity = MAX_HOSTS * window  # one result per outstanding request at most,
        # and one _Opened per data chunk being decrypted (LOOKAHEAD at most)
        self.results_send, self.results_recv = trio.open_memory_channel[tuple[Request, object]](capacity + LOOKAHEAD)
        # ready data chunks being decrypted (``_open_soon``): drained once opened
        self.opening: set[bytes] = set()

    def banned(self) -> tuple[bytes, ...]:
        return tuple(h for h in self.sources if self.sched.is_banned(h))

    def report(self) -> FetchProgress:
        return FetchProgress(chunks=self.sched.progress(), bytes_written=self.written, local_chunks=self.local,
                             elapsed=time.monotonic() - self.started)

    async def run(self, out: object) -> None:
        store_send, store_recv = trio.open_memory_channel[tuple[bytes, bytes]](STORE_QUEUE)
        failure: BaseException | None = None
        async with trio.open_nursery() as outer:
            if self.store is not None:
                outer.start_soon(self._store_writer, store_recv)
            async with store_send:
                try:
                    async with trio.open_nursery() as requests:
                        while await self._step(requests, out, store_send):
                            pass
                        for scope in self.scopes.values():  # made moot by a ban or a lost host
                            scope.cancel()
                except BaseExceptionGroup as group:
                    # one failure (FetchFailed, IntegrityError, ...) is reported as itself
                    failure = group.exceptions[0] if len(group.exceptions) == 1 else group
                except Exception as exc:
                    failure = exc
                self._count_unanswered()  # no request runs any more, whichever way it ended
                if isinstance(failure, Exception) and self.unkept:
                    # A data chunk that came early and waits in the reorder buffer is not in
                    # the part file: it goes to the store, so that no chunk is paid for twice.
                    for address, (data, _, opened) in list(self.ready.items()):
                        if address in self.unkept:
                            await store_send.send((address, self._stored_bytes(data, opened)))
            # leaving the block closed the store channel: the writer keeps every
            # chunk already paid for, even when the download failed, then ends
        if failure is not None:
            raise failure

    async def _step(self, nursery: trio.Nursery, out: object,
                    store_send: trio.MemorySendChannel[tuple[bytes, bytes]]) -> bool:
        """Feed what is ready, queue what is next, send requests, take one result; False when done."""
        if self._drainable(self.decoder.next_address()):
            # Taking the chunks in order and writing run in a worker (data chunks were decrypted as
            # they arrived: ``_open_soon``), so the request tasks keep receiving meanwhile; nothing
            # on the loop touches the decoder or the reorder buffer then.
            await trio.to_thread.run_sync(self._drain, out, limiter=self.decoding)
        if self.decoder.next_address() is None:
            return False
        await self._queue_upcoming()
        if self._drainable(self.decoder.next_address()):
            return True
        for req in self.sched.next_requests(time.monotonic()):
            scope = trio.CancelScope()
            self.scopes[req.request_id] = scope
            nursery.start_soon(self._ask, req, scope)
        if not self.scopes and not self.opening:
            stuck = self.sched.stuck()
            first = next((a for a, i in self.queued.items() if i in stuck), None)
            if first is not None and await self._look_again(first):
                return True
            raise FetchFailed(f"no usable host left for chunk {first.hex() if first else '?'}", first)
        req, result = await self.results_recv.receive()
        if isinstance(result, _Opened):
            self.opening.discard(req.address)
            entry = self.ready.get(req.address)
            if result.opened is not None and entry is not None:
                self.ready[req.address] = (None, True, result.opened)  # the plaintext only, from now on
            return True
        self.scopes.pop(req.request_id, None)
        if isinstance(result, (Fetched, SourceLied)):
            self.reported[req.host_id] = self.reported.get(req.host_id, 0) + result.paid
        if isinstance(result, Fetched):
            outcome = self.sched.chunk_received(req.request_id, result.data, time.monotonic(), paid=result.paid,
                                                verified=result.verified)
            if outcome is Outcome.ACCEPTED:
                del self.queued[req.address]
                slot = self.slots.pop(req.address, None)
                self.looked_up.discard(req.address)
                self.ready[req.address] = (result.data, True, None)  # ACCEPTED: the source or the scheduler hashed it
                if slot is not None:
                    self.opening.add(req.address)
                    nursery.start_soon(self._open_soon, req, slot, result.data)
                if self.store is not None and req.address not in self.unkept:
                    await store_send.send((req.address, result.data))
            for gone in self.sched.cancelled():
                self._cancel(gone)
        elif isinstance(result, SourceLied):
            self.sched.wrong_bytes(req.request_id, paid=result.paid)
            for gone in self.sched.cancelled():
                self._cancel(gone)
        elif isinstance(result, SourceGone):
            for gone in self.sched.host_failed(req.host_id):
                self._cancel(gone)
        else:
            self.sched.request_failed(req.request_id, missing=isinstance(result, SourceMissing))
        if self.on_progress is not None:
            self.on_progress(self.report())
        return True

    def _drainable(self, address: bytes | None) -> bool:
        """Whether the decoder can take ``address`` now: it is here, and not being decrypted."""
        return address is not None and address in self.ready and address not in self.opening

    def _drain(self, out: object) -> None:
        """Feed the decoder every chunk ready in file order and write the plaintext (in a worker thread)."""
        while self._drainable(address := self.decoder.next_address()):
            assert address is not None
            data, verified, opened = self.ready.pop(address)
            self.unkept.discard(address)
            while True:
                if opened is not None and isinstance(self.decoder, FileDecoder) and (
                        self.decoder.data_slots(1) == [opened[0]]):
                    plain = self.decoder.accept_data(*opened)  # decrypted on arrival
                else:
                    plain = self.decoder.feed(self._stored_bytes(data, opened), verified=verified)  # hashed once
                if plain:
                    out.write(plain)  # type: ignore[attr-defined]
                    self.written += len(plain)
                # A chunk wanted again at once (equal plaintext under a convergent chunk
                # secret, specs/chunks.md §4.4 Format-3 keys) is fed again: fetched once, kept or not.
                if self.decoder.next_address() != address:
                    break
                data, verified, opened = self._stored_bytes(data, opened), True, None

    def resume(self, part: BinaryIO) -> None:
        """Take the good start of a part file an earlier fetch to the same place left (in a worker thread).

        Before any request: data chunks are read back from ``part`` in file
        order and checked by sealing them again (``FileDecoder.seals_to``),
        manifest chunks come from the store.  The part file is cut after the
        last chunk that checks, and the fetch goes on from there
        (specs/network.md §5 Writing the file, resuming).
        """
        decoder = self.decoder
        assert isinstance(decoder, FileDecoder)  # only fetch_file writes a part file
        while (address := decoder.next_address()) is not None:
            slots = decoder.data_slots(1)
            if slots:
                plain = part.read(slots[0].size)
                if not decoder.seals_to(slots[0], plain):  # also a short read: the wrong size
                    break
                decoder.accept_data(slots[0], bytearray(plain))
            elif self.store is not None and self.store.may_have(address):
                try:
                    data = self.store.get(address)  # hashed: a damaged copy is fetched again instead
                except (ChunkNotFound, ChunkCorrupt):
                    break
                decoder.feed(data, verified=True)
            else:
                break
            self.local += 1
        self.written = decoder.bytes_out
        part.seek(self.written)
        part.truncate()

    def _cancel(self, req: Request) -> None:
        scope = self.scopes.pop(req.request_id, None)
        if scope is not None:
            scope.cancel()

    async def _queue_upcoming(self) -> None:
        fresh: list[bytes] = []
        for address in self.decoder.upcoming(LOOKAHEAD):
            if address in self.queued or address in self.ready or address in fresh:
                continue
            # may_have answers from memory: no thread hop for the common "not here"
            if self.store is not None and self.store.may_have(address):
                store = self.store
                try:
                    data = await trio.to_thread.run_sync(lambda: store.get(address, verify=False))
                    self.ready[address] = (data, False, None)  # the decoder hashes it
                    self.local += 1
                    continue
                except ChunkNotFound:
                    pass  # a chunk sharing the address's first bytes: fetch it
            fresh.append(address)
        fresh = fresh[:max(0, self.sched.room())]
        if not fresh:
            return
        # upcoming() lists the children of one manifest chunk: all data chunks or all manifests
        slots = self.decoder.data_slots(LOOKAHEAD) if isinstance(self.decoder, FileDecoder) else []
        if slots:
            by_address = {slot.address: slot for slot in slots}
            for address in fresh:
                if address in by_address:
                    self.slots[address] = by_address[address]
            if not self.keep_chunks:
                self.unkept.update(fresh)
        if self.resolver is not None:
            pending = len(self.queued) + len(self.ready)
            if (self.resolver.looks_up and len(fresh) < QUEUE_BATCH and pending >= LOOKAHEAD // 2
                    and self.decoder.next_address() not in fresh):
                return  # enough in flight: wait for a full batch to look up together
            # Holders computed from a complete view (no lookup): no watch for a slow one, per chunk.
            slow = (logged_if_slow("looking up the hosts of %d chunks (DHT lookups, dials)", len(fresh))
                    if self.resolver.looks_up else contextlib.nullcontext())
            async with slow:
                await self.resolver.ahead(fresh)
        for address in fresh:
            hosts = list(self.candidates(address))
            if self.resolver is not None:
                hosts += self._add_sources(await self.resolver.holders(address))
            self.sched.add_chunk(self.next_index, address, hosts)
            self.queued[address] = self.next_index
            self.next_index += 1

    def _still_to_fetch(self) -> int:
        """Plaintext bytes of the file not yet written: what the fetch still means to ask for (0 before
        the root is read, and for a keyless fetch, which cannot know it)."""
        if not isinstance(self.decoder, FileDecoder) or self.decoder.manifest is None:
            return 0
        return max(0, self.decoder.manifest.size - self.decoder.bytes_out)

    def _count_unanswered(self) -> None:
        """Once no request runs: count lost what each source spent that no result reported."""
        for host, source in self.sources.items():
            unanswered = source.spent - self.spent_before.get(host, 0) - self.reported.get(host, 0)
            if unanswered > 0:
                self.sched.paid_unanswered(unanswered)
        self.spent_before = {host: source.spent for host, source in self.sources.items()}
        self.reported.clear()

    def _add_sources(self, found: list[ChunkSource]) -> list[bytes]:
        for source in found:
            if source.host_id not in self.sources:
                self.spent_before[source.host_id] = source.spent
                self.sources[source.host_id] = source
                self.sched.add_host(source.host_id, source.price_per_mib)
        return [source.host_id for source in found]

    async def _look_again(self, address: bytes) -> bool:
        """A stuck chunk's last resort: a real DHT lookup for its holders (once per chunk); True if it found new ones."""
        if self.resolver is None or address in self.looked_up:
            return False
        self.looked_up.add(address)
        hosts = self._add_sources(await self.resolver.holders(address, lookup=True))
        index = self.queued[address]
        self.sched.add_candidates(index, hosts)
        return index not in self.sched.stuck()

    async def _ask(self, req: Request, scope: trio.CancelScope) -> None:
        source = self.sources[req.host_id]
        result: object
        with scope:
            try:
                with trio.fail_after(self.sched.request_timeout):
                    slot = self.slots.get(req.address)
                    result = await source.get_chunk(req.address, None if slot is None else slot.size + TAG_SIZE,
                                                    more=self._still_to_fetch())
            except trio.TooSlowError:
                # Waits inside (a channel's funding and confirmations, the
                # host) log their own cause when they take long.
                log.info("chunk %s from %s: no answer within %.0f s", req.address.hex(), req.host_id.hex(),
                         self.sched.request_timeout)
                result = SourceError("request timed out")
            except SourceError as exc:
                result = exc
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                result = SourceGone(str(exc))
            await self.results_send.send((req, result))

    def _stored_bytes(self, data: bytes | None, opened: tuple[DataSlot, bytearray] | None) -> bytes:
        """A ready chunk's bytes: kept, or sealed again from the plaintext it was opened to."""
        if data is not None:
            return data
        assert opened is not None and isinstance(self.decoder, FileDecoder)
        return bytes(self.decoder.seal_data(*opened))

    async def _open_soon(self, req: Request, slot: DataSlot, data: bytes) -> None:
        """Decrypt a data chunk just accepted, out of order, and say so through the results channel."""
        opened = await trio.to_thread.run_sync(self._open, slot, data)
        await self.results_send.send((req, _Opened(opened)))

    def _open(self, slot: DataSlot, data: bytes) -> tuple[DataSlot, bytearray] | None:
        """A data chunk checked against its address, decrypted as it arrives (in a worker thread,
        out of order: ``open_data`` leaves the decoder alone); None if it does not open, which
        the decoder then reports in file order."""
        assert isinstance(self.decoder, FileDecoder)
        try:
            return slot, self.decoder.open_data(slot, data, verified=True)
        except IntegrityError:
            return None

    async def _store_writer(self, recv: trio.MemoryReceiveChannel[tuple[bytes, bytes]]) -> None:
        assert self.store is not None
        store = self.store
        async with recv:
            async for address, data in recv:
                await trio.to_thread.run_sync(lambda: store.put(address, data, verify=False))
