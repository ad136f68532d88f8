"""Transport limits with their defaults (specs/wire.md §8 Limits and defaults lists the same names)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.wire import MAX_READ_SIZE

#: Seconds an unauthenticated connection may take to finish the handshake and
#: HELLO exchange.  An honest handshake is two round trips and a few
#: milliseconds of crypto; a short bound makes every idle connection an
#: attacker holds expire quickly (specs/wire.md §8 Limits and defaults).
HANDSHAKE_TIMEOUT = 5.0
#: Established sessions kept with one authenticated node id: one dialled each
#: way covers two peers dialling each other at once; a further one replaces
#: the oldest (specs/wire.md §8 Limits and defaults).
MAX_SESSIONS_PER_NODE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on everything the transport holds per peer and in total.

    Attributes:
        max_peers: established sessions at once; more inbound ones are
            refused after the handshake, more outbound ones raise.
        max_sessions_per_node: established sessions with one authenticated
            node id; a newer one closes the oldest.
        max_handshakes: inbound connections still in the handshake (not yet
            authenticated) at once; a newcomer past it evicts the oldest
            pending handshake of the address that holds the most.
        handshake_timeout: seconds a connection may take to finish the
            handshake and HELLO exchange.
        idle_timeout: seconds without a frame and without work in flight
            after which a session is closed.
        max_inflight_requests: requests from a peer being served at once;
            beyond it the session stops reading (TCP back-pressure).
        max_pending_requests: our outstanding requests on one session;
            beyond it ``Session.request`` waits for a slot.
        receive_size: bytes asked of the socket per read.
    """

    max_peers: int = 256
    max_sessions_per_node: int = MAX_SESSIONS_PER_NODE
    max_handshakes: int = 64
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = 300.0
    max_inflight_requests: int = 64
    max_pending_requests: int = 1024
    receive_size: int = MAX_READ_SIZE

    def __post_init__(self) -> None:
        for name in ("max_peers", "max_sessions_per_node", "max_handshakes", "max_inflight_requests",
                     "max_pending_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.receive_size <= MAX_READ_SIZE:
            raise ValueError(f"receive_size must be in 1..{MAX_READ_SIZE}")
        if self.handshake_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("timeouts must be positive")
