"""The iterative node lookup as a state machine (Kademlia §2.3; specs/dht.md §6).

The caller owns the sockets and the clock.  It asks ``next_requests(now)`` for
the contacts to query (never more than alpha in flight), sends each one a
``find_node`` (or ``find_value`` / ``mu_get_providers``), and reports what
happened with ``on_response`` or ``on_failure``.  Requests older than the
timeout count as failed the next time ``next_requests`` is called.

While replies keep naming closer contacts, at most alpha requests are in
flight.  Once alpha replies in a row bring nothing closer than the closest
contact already known, the lookup asks all the k closest it has not asked yet
at once (Kademlia §2.3: "if a round of FIND_NODEs fails to return a node any
closer ... the initiator resends the FIND_NODE to all of the k closest nodes
it has not already queried"); a closer contact turns that off again.

The lookup is done when the k closest contacts it knows of that have not
failed have all answered, or when nothing is left to ask.  This strict rule
(rather than "no closer contact in the last round") is what makes a lookup
return exactly the k closest live nodes once tables are populated.

With a ``soft_timeout`` (specs/dht.md §6 Iterative lookup, "Slow
requests"), a request unanswered that long becomes *slow*: it no longer
holds a slot among the alpha in flight nor the lookup's end, the next
closest contact takes its place, and its answer is still used if it comes
before the lookup ends.  Only the (hard) ``timeout`` counts it failed.  A
dead node that other nodes still name then costs a lookup ``soft_timeout``,
not ``timeout``.  While no contact has answered, slow requests still hold
the end: a lookup never ends empty only because every answer was slow.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from protocol.kademlia.ids import ALPHA, K, Contact, check_id

#: Seconds a lookup waits for one reply before counting it failed (specs/dht.md §2).
REQUEST_TIMEOUT = 2.0
#: Share of the request timeout after which an unanswered request is slow and stops
#: holding the lookup's end (specs/dht.md §2, §6 "Slow requests").
SOFT_TIMEOUT_SHARE = 0.25
SOFT_TIMEOUT = REQUEST_TIMEOUT * SOFT_TIMEOUT_SHARE
#: Most contacts one lookup tracks; the farthest unqueried ones are dropped (§6).
MAX_LOOKUP_CANDIDATES = 8 * K
#: Most contacts taken from one reply (a reply carries at most k).
MAX_CONTACTS_PER_REPLY = K


class _State(enum.Enum):
    CANDIDATE = 0
    IN_FLIGHT = 1
    RESPONDED = 2
    FAILED = 3
    SLOW = 4  # asked, unanswered past the soft timeout, not yet failed


@dataclass(slots=True)
class _Node:
    contact: Contact
    key: int
    state: _State
    sent_at: float = 0.0


_OUTSTANDING = (_State.IN_FLIGHT, _State.SLOW)
_LEFT_OUT = (_State.FAILED, _State.SLOW)  # not among the k closest a lookup waits for


class Lookup:
    """One iterative lookup of ``target``."""

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        *,
        own_id: bytes | None = None,
        k: int = K,
        alpha: int = ALPHA,
        timeout: float = REQUEST_TIMEOUT,
        soft_timeout: float | None = None,
        max_candidates: int = MAX_LOOKUP_CANDIDATES,
    ) -> None:
        self.target = check_id(target, "lookup target")
        self.own_id = own_id
        self.k = k
        self.alpha = alpha
        self.timeout = timeout
        # None: every request holds the lookup's end until it is answered or times out
        self.soft_timeout = timeout if soft_timeout is None else min(soft_timeout, timeout)
        self.max_candidates = max_candidates
        self._t = int.from_bytes(target, "big")
        self._nodes: dict[bytes, _Node] = {}
        self.queries = 0
        self.responses = 0
        self.failures = 0
        self._best: int | None = None  # distance of the closest contact ever known
        self._stalled = 0  # replies in a row that brought nothing closer
        self._add(seeds)

    # -- caller interface ------------------------------------------------

    def next_requests(self, now: float) -> list[Contact]:
        """Contacts to query now; each is marked in flight as of ``now``."""
        for n in self._nodes.values():
            if n.state in _OUTSTANDING and now - n.sent_at >= self.timeout:
                if n.state is _State.IN_FLIGHT:
                    self._stalled += 1  # a slow one was counted when it became slow
                n.state = _State.FAILED
                self.failures += 1
            elif n.state is _State.IN_FLIGHT and now - n.sent_at >= self.soft_timeout:
                n.state = _State.SLOW  # it has brought nothing closer meanwhile: counted as a stall
                self._stalled += 1
        in_flight = sum(1 for n in self._nodes.values() if n.state is _State.IN_FLIGHT)
        limit = self.k if self._stalled >= self.alpha else self.alpha
        out: list[Contact] = []
        for n in self._live_closest():
            if in_flight >= limit:
                break
            if n.state is _State.CANDIDATE:
                n.state = _State.IN_FLIGHT
                n.sent_at = now
                in_flight += 1
                self.queries += 1
                out.append(n.contact)
        return out

    def on_response(self, node_id: bytes, contacts: Iterable[Contact]) -> None:
        """``node_id`` answered and named ``contacts`` (at most k are used)."""
        n = self._nodes.get(node_id)
        if n is None or n.state not in _OUTSTANDING:
            return  # unsolicited or after its timeout: ignore (specs/dht.md §6)
        n.state = _State.RESPONDED
        self.responses += 1
        taken: list[Contact] = []
        for c in contacts:
            if len(taken) >= MAX_CONTACTS_PER_REPLY:
                break
            taken.append(c)
        before = self._best
        self._add(taken)
        self._stalled = 0 if before is None or (self._best is not None and self._best < before) else self._stalled + 1

    def on_failure(self, node_id: bytes) -> None:
        """``node_id`` did not answer, or answered with garbage."""
        n = self._nodes.get(node_id)
        if n is not None and n.state in _OUTSTANDING:
            if n.state is _State.IN_FLIGHT:
                self._stalled += 1
            n.state = _State.FAILED
            self.failures += 1

    @property
    def in_flight(self) -> list[Contact]:
        """Contacts queried and not yet answered (slow ones too)."""
        return [n.contact for n in self._nodes.values() if n.state in _OUTSTANDING]

    @property
    def slow(self) -> list[Contact]:
        """Contacts unanswered past the soft timeout and not failed: left out if the lookup ends now."""
        return [n.contact for n in self._nodes.values() if n.state is _State.SLOW]

    def next_deadline(self) -> float | None:
        """When an outstanding request next turns slow or failed (call ``next_requests`` then); None if none is."""
        times = [n.sent_at + (self.soft_timeout if n.state is _State.IN_FLIGHT else self.timeout)
                 for n in self._nodes.values() if n.state in _OUTSTANDING]
        return min(times, default=None)

    @property
    def done(self) -> bool:
        """True when the k closest contacts neither failed nor slow have all answered.

        Slow requests hold the end only while no contact has answered.
        """
        if not self.responses and self.slow:
            return False
        closest = self._live_closest()
        return all(n.state is _State.RESPONDED for n in closest)

    def result(self) -> list[Contact]:
        """The (up to) k closest contacts that answered, nearest first."""
        return [n.contact for n in self._live_closest() if n.state is _State.RESPONDED]

    def responded(self) -> list[Contact]:
        """Every contact that answered, nearest first."""
        ordered = sorted(self._nodes.values(), key=lambda n: n.key)
        return [n.contact for n in ordered if n.state is _State.RESPONDED]

    # -- internals -------------------------------------------------------

    def _live_closest(self) -> list[_Node]:
        live = [n for n in self._nodes.values() if n.state not in _LEFT_OUT]
        live.sort(key=lambda n: n.key)
        return live[: self.k]

    def _add(self, contacts: Iterable[Contact]) -> None:
        for c in contacts:
            if c.node_id == self.own_id or c.node_id in self._nodes:
                continue
            key = int.from_bytes(c.node_id, "big") ^ self._t
            self._nodes[c.node_id] = _Node(c, key, _State.CANDIDATE)
            if self._best is None or key < self._best:
                self._best = key
        if len(self._nodes) > self.max_candidates:
            # Bound memory: forget the farthest contacts never queried.
            spare = sorted(
                (n for n in self._nodes.values() if n.state is _State.CANDIDATE),
                key=lambda n: n.key,
                reverse=True,
            )
            for n in spare[: len(self._nodes) - self.max_candidates]:
                del self._nodes[n.contact.node_id]
