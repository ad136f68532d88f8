"""Multi-host download scheduling and chunk placement (specs/network.md).

Pure and sans-I/O: the caller owns sockets, clocks and payments.  It tells a
:class:`FetchScheduler` which chunks it wants and which hosts may hold them,
asks it for requests to send (:meth:`FetchScheduler.next_requests`), and
reports what happened to each one (:meth:`~FetchScheduler.chunk_received`,
:meth:`~FetchScheduler.request_failed`, :meth:`~FetchScheduler.expire`).

The rules (specs/network.md §4):

* a chunk has at most one request outstanding and is accepted exactly once,
  from the request that is currently outstanding for it;
* a host never has more than ``window`` requests outstanding;
* a host whose price per MiB is above the fetcher's maximum is never asked;
* among the eligible candidates of a chunk the cheapest host wins, then the
  one with the lowest observed request time, then the least loaded;
* bytes whose SHA-256 is not the chunk address ban the host for the rest of
  the download: every request it has outstanding is cancelled and its chunks
  go back to the queue; the caller never pays for those bytes;
* a failed or timed-out request puts the chunk back in the queue and that
  host is not asked for that chunk again in this round; once every usable
  candidate has failed a chunk, a new round asks them again, at most
  ``MAX_CHUNK_ROUNDS`` rounds per chunk; a host that fails
  ``MAX_HOST_FAILURES`` requests in a row is dropped (an answer that it
  does not hold the chunk is not a failure of the host).

The placement rule (specs/network.md §3) lives here too: a chunk is stored on
the ``replicas`` node IDs XOR-closest to its DHT key, the first 20 bytes of
SHA-256 of its address.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from protocol.chunks import ADDRESS_SIZE

NODE_ID_SIZE = 20
DHT_KEY_SIZE = 20
DEFAULT_REPLICAS = 3
MAX_REPLICAS = 20
DEFAULT_WINDOW = 16
MAX_WINDOW = 64
DEFAULT_REQUEST_TIMEOUT = 30.0
MAX_HOSTS = 1024
MAX_CANDIDATES_PER_CHUNK = 64
MAX_QUEUED_CHUNKS = 4096
MAX_HOST_FAILURES = 3
# Passes over a chunk's candidates before it is given up (a busy host may
# time out once and still be the only holder left).
MAX_CHUNK_ROUNDS = 3
# Weight of a new observation in the per-host moving average of request time.
EWMA_WEIGHT = 0.25


class FetchError(ValueError):
    """The caller used the scheduler wrongly (unknown request, bad argument)."""


def dht_key(address: bytes) -> bytes:
    """Return the DHT key of a chunk: SHA-256(address)[:20] (specs/network.md §3)."""
    if len(address) != ADDRESS_SIZE:
        raise FetchError(f"chunk address must be {ADDRESS_SIZE} bytes, got {len(address)}")
    return hashlib.sha256(address).digest()[:DHT_KEY_SIZE]


def closest_nodes(key: bytes, node_ids: Iterable[bytes], count: int) -> list[bytes]:
    """Return up to ``count`` distinct node IDs XOR-closest to ``key``, closest first."""
    if len(key) != DHT_KEY_SIZE:
        raise FetchError(f"DHT key must be {DHT_KEY_SIZE} bytes, got {len(key)}")
    k = int.from_bytes(key, "big")
    unique = set()
    for node_id in node_ids:
        if len(node_id) != NODE_ID_SIZE:
            raise FetchError(f"node ID must be {NODE_ID_SIZE} bytes, got {len(node_id)}")
        unique.add(node_id)
    return sorted(unique, key=lambda n: int.from_bytes(n, "big") ^ k)[:count]


def placement(address: bytes, node_ids: Iterable[bytes], replicas: int = DEFAULT_REPLICAS) -> list[bytes]:
    """Return the node IDs that should store ``address``: the ``replicas`` closest to its DHT key."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise FetchError(f"replicas must be 1..{MAX_REPLICAS}, got {replicas}")
    return closest_nodes(dht_key(address), node_ids, replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One chunk request handed to the caller to send."""

    request_id: int
    index: int
    address: bytes
    host_id: bytes
    sent_at: float
    deadline: float
    outstanding: int = 1  # the host's outstanding requests once this one was sent, itself included


class Outcome(Enum):
    """What :meth:`FetchScheduler.chunk_received` made of the bytes."""

    ACCEPTED = "accepted"  # verified: write them, the chunk is done
    WRONG_BYTES = "wrong-bytes"  # SHA-256 mismatch: host banned, do not pay
    STALE = "stale"  # the request is no longer outstanding: ignore the bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A snapshot of a download for progress reports."""

    chunks_done: int
    chunks_total: int
    bytes_done: int
    sats_spent: int
    sats_lost: int
    in_flight: int
    hosts_banned: int


@dataclass(slots=True)
class _Host:
    host_id: bytes
    price_per_mib: int
    in_flight: int = 0
    ewma_seconds: float = 0.0  # moving average of its seconds per request served (see chunk_received)
    consecutive_failures: int = 0
    banned: bool = False
    dropped: bool = False

    def usable(self) -> bool:
        return not (self.banned or self.dropped)


@dataclass(slots=True)
class _Chunk:
    index: int
    address: bytes
    candidates: list[bytes] = field(default_factory=list)
    failed_hosts: set[bytes] = field(default_factory=set)
    request_id: int | None = None
    rounds: int = 1


class FetchScheduler:
    """Hands out chunk requests to many hosts and tracks their outcomes.

    Args:
        max_price_per_mib: the most the fetcher pays a host, in sats per MiB.
        window: requests outstanding per host at most (1..MAX_WINDOW).
        request_timeout: seconds before an outstanding request is given up.
    """

    def __init__(self, *, max_price_per_mib: int, window: int = DEFAULT_WINDOW,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        if max_price_per_mib < 0:
            raise FetchError("max_price_per_mib must be >= 0")
        if not 1 <= window <= MAX_WINDOW:
            raise FetchError(f"window must be 1..{MAX_WINDOW}, got {window}")
        if request_timeout <= 0:
            raise FetchError("request_timeout must be > 0")
        self.max_price_per_mib = max_price_per_mib
        self.window = window
        self.request_timeout = request_timeout
        self._hosts: dict[bytes, _Host] = {}
        self._chunks: dict[int, _Chunk] = {}  # not yet done, in insertion order
        self._requests: dict[int, Request] = {}
        self._cancelled: list[Request] = []
        self._next_request_id = 1
        self._chunks_total = 0
        self._chunks_done = 0
        self._bytes_done = 0
        self._sats_spent = 0
        self._sats_lost = 0

    # -- inputs ----------------------------------------------------------

    def add_host(self, host_id: bytes, price_per_mib: int) -> None:
        """Make a host known with its retrieval price; a repeat updates the price."""
        if len(host_id) != NODE_ID_SIZE:
            raise FetchError(f"host ID must be {NODE_ID_SIZE} bytes")
        if price_per_mib < 0:
            raise FetchError("price_per_mib must be >= 0")
        host = self._hosts.get(host_id)
        if host is None:
            if len(self._hosts) >= MAX_HOSTS:
                raise FetchError(f"more than MAX_HOSTS={MAX_HOSTS} hosts")
            self._hosts[host_id] = _Host(host_id, price_per_mib)
        else:
            host.price_per_mib = price_per_mib

    def room(self) -> int:
        """How many more chunks :meth:`add_chunk` accepts now (MAX_QUEUED_CHUNKS bound)."""
        return MAX_QUEUED_CHUNKS - len(self._chunks)

    def add_chunk(self, index: int, address: bytes, candidates: Sequence[bytes] = ()) -> None:
        """Queue chunk ``index`` (its position in the file) with candidate host IDs."""
        if len(address) != ADDRESS_SIZE:
            raise FetchError(f"chunk address must be {ADDRESS_SIZE} bytes")
        if index in self._chunks:
            raise FetchError(f"chunk {index} is already queued")
        if self.room() <= 0:
            raise FetchError(f"more than MAX_QUEUED_CHUNKS={MAX_QUEUED_CHUNKS} chunks queued")
        self._chunks[index] = _Chunk(index, address)
        self._chunks_total += 1
        self.add_candidates(index, candidates)

    def add_candidates(self, index: int, host_ids: Iterable[bytes]) -> None:
        """Add hosts that may hold chunk ``index`` (known hosts only; repeats ignored)."""
        chunk = self._chunks.get(index)
        if chunk is None:
            return
        for host_id in host_ids:
            if host_id not in self._hosts:
                raise FetchError("candidate is not a known host: call add_host first")
            if host_id not in chunk.candidates and len(chunk.candidates) < MAX_CANDIDATES_PER_CHUNK:
                chunk.candidates.append(host_id)

    # -- scheduling ------------------------------------------------------

    def _eligible(self, chunk: _Chunk) -> list[_Host]:
        hosts = (self._hosts[h] for h in chunk.candidates if h not in chunk.failed_hosts)
        return [h for h in hosts if h.usable() and h.price_per_mib <= self.max_price_per_mib]

    def next_requests(self, now: float) -> list[Request]:
        """Return new requests to send, filling every host's window, earliest chunks first."""
        out: list[Request] = []
        free = {h.host_id: self.window - h.in_flight for h in self._hosts.values() if h.usable()}
        if not any(v > 0 for v in free.values()):
            return out
        for chunk in self._chunks.values():
            if chunk.request_id is not None:
                continue
            hosts = [h for h in self._eligible(chunk) if free.get(h.host_id, 0) > 0]
            if not hosts:
                continue
            # The soonest answer at the lowest price: a request waits behind the host's outstanding ones.
            best = min(hosts, key=lambda h: (h.price_per_mib, (h.in_flight + 1) * h.ewma_seconds, h.in_flight,
                                             h.host_id))
            req = Request(request_id=self._next_request_id, index=chunk.index, address=chunk.address,
                          host_id=best.host_id, sent_at=now, deadline=now + self.request_timeout,
                          outstanding=best.in_flight + 1)
            self._next_request_id += 1
            self._requests[req.request_id] = req
            chunk.request_id = req.request_id
            best.in_flight += 1
            free[best.host_id] -= 1
            out.append(req)
            if not any(v > 0 for v in free.values()):
                break
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of an outstanding request, or None."""
        return min((r.deadline for r in self._requests.values()), default=None)

    # -- outcomes --------------------------------------------------------

    def _finish(self, request_id: int) -> tuple[Request, _Chunk | None] | None:
        req = self._requests.pop(request_id, None)
        if req is None:
            return None
        self._hosts[req.host_id].in_flight -= 1
        chunk = self._chunks.get(req.index)
        if chunk is not None and chunk.request_id == request_id:
            chunk.request_id = None
        return req, chunk

    def chunk_received(self, request_id: int, data: bytes, now: float, *, paid: int = 0,
                       verified: bool = False) -> Outcome:
        """Judge the bytes a host returned for a request.

        Args:
            paid: sats the caller paid the host for this request (counted as
                spent when the bytes are right, as lost when they are not).
            verified: the caller already checked SHA-256(data) == address
                (the transport does), so it is not hashed again here.

        Returns ACCEPTED (the chunk is done), WRONG_BYTES (the host is banned,
        its other requests are cancelled, see :meth:`cancelled`) or STALE.
        """
        if paid < 0:
            raise FetchError("paid must be >= 0")
        finished = self._finish(request_id)
        if finished is None:
            self._sats_lost += paid
            return Outcome.STALE
        req, chunk = finished
        host = self._hosts[req.host_id]
        if not verified and hashlib.sha256(data).digest() != req.address:
            self._punish_liar(host, chunk, paid)
            return Outcome.WRONG_BYTES
        assert chunk is not None  # an outstanding request always has its chunk queued
        # The request waited behind those sent before it: its time over the requests it
        # found outstanding (itself included) is what the host took per request.
        sample = max(0.0, now - req.sent_at) / req.outstanding
        host.ewma_seconds = sample if host.ewma_seconds == 0.0 else (
            (1 - EWMA_WEIGHT) * host.ewma_seconds + EWMA_WEIGHT * sample)
        host.consecutive_failures = 0
        del self._chunks[req.index]
        self._chunks_done += 1
        self._bytes_done += len(data)
        self._sats_spent += paid
        return Outcome.ACCEPTED

    def wrong_bytes(self, request_id: int, *, paid: int = 0) -> Outcome:
        """The host's bytes for a request failed a check made by the caller (e.g. the transport's).

        Same effect as :meth:`chunk_received` with bytes of the wrong hash:
        the host is banned.  Returns WRONG_BYTES, or STALE for a request no
        longer outstanding (the payment is still counted lost).
        """
        finished = self._finish(request_id)
        if finished is None:
            self._sats_lost += paid
            return Outcome.STALE
        req, chunk = finished
        self._punish_liar(self._hosts[req.host_id], chunk, paid)
        return Outcome.WRONG_BYTES

    def _punish_liar(self, host: _Host, chunk: _Chunk | None, paid: int) -> None:
        self._sats_lost += paid
        self._ban(host)
        if chunk is not None:
            chunk.failed_hosts.add(host.host_id)

    def paid_unanswered(self, paid: int) -> None:
        """Count as lost ``paid`` sats that went with requests whose outcome never came back
        (given up by the caller: cancelled once their payment had left)."""
        if paid < 0:
            raise FetchError("paid must be >= 0")
        self._sats_lost += paid

    def request_failed(self, request_id: int, *, paid: int = 0, missing: bool = False) -> None:
        """A request ended without bytes (error reply, broken session): requeue its chunk.

        ``missing``: the host answered that it does not hold the chunk.  It
        is not asked for that chunk again this round, but the miss does not
        count towards dropping it: a candidate is a guess (a replica set
        computed from a view, a provider), and a working host missing a few
        chunks must stay a source for the ones it holds.
        """
        finished = self._finish(request_id)
        self._sats_lost += paid
        if finished is None:
            return
        req, chunk = finished
        host = self._hosts[req.host_id]
        if not missing:
            host.consecutive_failures += 1
        if host.consecutive_failures >= MAX_HOST_FAILURES:
            host.dropped = True
        if chunk is not None:
            chunk.failed_hosts.add(host.host_id)
            if not self._eligible(chunk) and chunk.rounds < MAX_CHUNK_ROUNDS:
                # every usable candidate failed it once: ask them all again;
                # banned and dropped hosts stay out (_Host.usable)
                chunk.rounds += 1
                chunk.failed_hosts.clear()

    def host_failed(self, host_id: bytes) -> list[Request]:
        """A host is gone (connection lost): drop it and return its cancelled requests."""
        host = self._hosts.get(host_id)
        if host is None:
            return []
        host.dropped = True
        return self._cancel_host(host)

    def expire(self, now: float) -> list[Request]:
        """Fail every request whose deadline has passed; return them for the caller to abandon."""
        late = [r for r in self._requests.values() if r.deadline <= now]
        for req in late:
            self.request_failed(req.request_id)
        return late

    def _ban(self, host: _Host) -> None:
        host.banned = True
        self._cancelled.extend(self._cancel_host(host))

    def _cancel_host(self, host: _Host) -> list[Request]:
        gone = [r for r in self._requests.values() if r.host_id == host.host_id]
        for req in gone:
            self._finish(req.request_id)
        return gone

    def cancelled(self) -> list[Request]:
        """Requests cancelled by a ban since the last call: the caller abandons them."""
        out, self._cancelled = self._cancelled, []
        return out

    # -- state -----------------------------------------------------------

    def is_banned(self, host_id: bytes) -> bool:
        host = self._hosts.get(host_id)
        return host is not None and host.banned

    @property
    def done(self) -> bool:
        """True when every queued chunk has been accepted."""
        return not self._chunks

    def stuck(self) -> list[int]:
        """Indexes of queued chunks that no usable, affordable host is left to serve."""
        return [c.index for c in self._chunks.values() if c.request_id is None and not self._eligible(c)]

    def progress(self) -> Progress:
        return Progress(chunks_done=self._chunks_done, chunks_total=self._chunks_total,
                        bytes_done=self._bytes_done, sats_spent=self._sats_spent,
                        sats_lost=self._sats_lost, in_flight=len(self._requests),
                        hosts_banned=sum(1 for h in self._hosts.values() if h.banned))
