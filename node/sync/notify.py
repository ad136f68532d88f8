"""Push for synced folders: SYNC_NOTIFY sent after a publish, and admitted with bounds (specs/sync.md §16 Notify).

Polling the other devices' records (``POLL_SECONDS``) is the safety net;
a notify only says "device D published sequence number S", so the nodes
that sync a folder with D run a round now instead of at the next poll.  A
notify carries no folder key and no name: a node learns nothing from one
it did not already know, and a node that syncs nothing with D drops it
after one dictionary look-up.

Sending: to the node each other device's record names (specs/sync.md §14.2
Per-device records), dialled through the DHT like any host, every dial and
send bounded by ``NOTIFY_TIMEOUT``; a node that cannot be reached is simply
not notified (it polls).  Receiving: ``NotifyGate`` admits at most one
notify per peer node per ``NOTIFY_INTERVAL`` and keeps at most
``MAX_NOTIFY_PEERS`` peers' times, so a flood costs a look-up per frame and
never more than one round per interval per peer.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

import trio

from node.transport import Session, TransportError
from protocol.wire import SyncNotify

log = logging.getLogger("mu.sync")

#: Longest time one node's dial and send may take; past it that node is not notified.
NOTIFY_TIMEOUT = 5.0
#: A peer node's notifies are acted on at most once per this many seconds.
NOTIFY_INTERVAL = 1.0
#: Peer nodes whose last admitted notify time is kept (oldest forgotten first).
MAX_NOTIFY_PEERS = 1024
#: After an admitted notify the service waits this long before its round, so a burst makes one round.
NOTIFY_DEBOUNCE = 0.2


class SessionSource(Protocol):
    """Where sessions to nodes come from: the node's ``PeerDialer``."""

    async def session(self, node_id: bytes) -> Session | None: ...


class NotifyGate:
    """Per-peer rate limit of admitted notifies, bounded in memory (times from the caller's clock)."""

    def __init__(self, interval: float = NOTIFY_INTERVAL, max_peers: int = MAX_NOTIFY_PEERS) -> None:
        self.interval = interval
        self.max_peers = max_peers
        self._last: OrderedDict[bytes, float] = OrderedDict()
        self.refused = 0  # notifies dropped by the rate limit (status and tests read it)

    def admit(self, peer: bytes, now: float) -> bool:
        """True if ``peer``'s notify at ``now`` may make a round; records it if so."""
        last = self._last.get(peer)
        if last is not None and now - last < self.interval:
            self.refused += 1
            return False
        self._last[peer] = now
        self._last.move_to_end(peer)
        while len(self._last) > self.max_peers:
            self._last.popitem(last=False)
        return True


async def _notify_one(dialer: SessionSource, node: bytes, message: SyncNotify) -> bool:
    with trio.move_on_after(NOTIFY_TIMEOUT):
        try:
            session = await dialer.session(node)
            if session is None:
                return False
            await session.notify(message)
            return True
        except (TransportError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("could not notify node %s: %s", node.hex()[:12], exc)
    return False


async def send_notifies(dialer: SessionSource, device: bytes, seq: int, nodes: Iterable[bytes]) -> int:
    """Tell each of ``nodes`` that ``device`` published ``seq``, all at once; returns how many were sent.

    Never raises for a node that cannot be reached: that node polls.
    """
    message = SyncNotify(device=device, seq=seq)
    sent = 0

    async def one(node: bytes) -> None:
        nonlocal sent
        sent += await _notify_one(dialer, node, message)

    async with trio.open_nursery() as nursery:
        for node in sorted(set(nodes)):
            nursery.start_soon(one, node)
    return sent
