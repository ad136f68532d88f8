"""How fast each host moved our chunks lately: a small in-memory moving average (specs/network.md §10 Web app).

The fetcher's scheduler keeps per-host timings for one download only; the
Network page wants them across downloads and uploads.  ``HostSpeeds``
keeps, per host, an exponentially weighted moving average of bytes per
second over its recent transfers (each chunk GET or PUT timed from request
to answer), for at most ``MAX_HOSTS_TRACKED`` hosts (the least recently
used is dropped).  ``timed_source`` and ``timed_put`` wrap the fetcher's
sources and the uploader's PUT so that every transfer is measured, paid or
free, and a failed one counts nothing.  Nothing is written to disk.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from node.files.fetcher import ChunkSource, Fetched
from node.files.uploader import Put
from node.transport import Session

#: Hosts whose speed is kept; the least recently used goes first.
MAX_HOSTS_TRACKED = 256
#: Weight of the newest transfer in the moving average.
SPEED_WEIGHT = 0.2
#: Shortest time a transfer counts for (a clock tick is not an infinite speed).
MIN_SECONDS = 1e-4

MakeSource = Callable[[Session], Awaitable[ChunkSource]]


@dataclass(frozen=True, slots=True)
class HostSpeed:
    """One host's recent speed: ``bytes_per_s`` averaged over ``transfers``, the last at ``last_at`` (unix s)."""

    bytes_per_s: float
    transfers: int
    last_at: float


class HostSpeeds:
    """Per-host moving averages of transfer speed, bounded.

    Args:
        clock: unix seconds, for ``last_at`` (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._hosts: OrderedDict[bytes, HostSpeed] = OrderedDict()

    def record(self, host_id: bytes, size: int, seconds: float) -> None:
        """One transfer of ``size`` bytes with ``host_id`` that took ``seconds``."""
        rate = size / max(seconds, MIN_SECONDS)
        old = self._hosts.pop(host_id, None)
        average = rate if old is None else (1 - SPEED_WEIGHT) * old.bytes_per_s + SPEED_WEIGHT * rate
        self._hosts[host_id] = HostSpeed(average, 1 if old is None else old.transfers + 1, self._clock())
        while len(self._hosts) > MAX_HOSTS_TRACKED:
            self._hosts.popitem(last=False)

    def get(self, host_id: bytes) -> HostSpeed | None:
        return self._hosts.get(host_id)

    def timed_source(self, make_source: MakeSource) -> MakeSource:
        """``make_source`` whose sources time each chunk they fetch."""

        async def make(session: Session) -> ChunkSource:
            return _TimedSource(await make_source(session), self)

        return make

    def timed_put(self, put: Put) -> Put:
        """``put`` timed per chunk stored."""

        async def timed(session: Session, address: bytes, data: bytes) -> object:
            started = time.monotonic()
            result = await put(session, address, data)
            self.record(session.peer_node_id, len(data), time.monotonic() - started)
            return result

        return timed


class _TimedSource:
    """A ``ChunkSource`` that reports each fetched chunk's speed to ``HostSpeeds``."""

    def __init__(self, source: ChunkSource, speeds: HostSpeeds) -> None:
        self._source = source
        self._speeds = speeds
        self.host_id = source.host_id
        self.price_per_mib = source.price_per_mib

    @property
    def spent(self) -> int:
        return self._source.spent

    async def get_chunk(self, address: bytes, size: int | None = None, *, more: int = 0) -> Fetched:
        started = time.monotonic()
        fetched = await self._source.get_chunk(address, size, more=more)
        self._speeds.record(self.host_id, len(fetched.data), time.monotonic() - started)
        return fetched
