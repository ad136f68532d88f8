"""The routing table: 160 k-buckets with replacement caches (specs/dht.md §5).

Bucket i holds contacts at XOR distance [2**i, 2**(i+1)) from our own ID, in
least-recently-seen order (Kademlia §2.2).  A full bucket never drops a live
contact for a newcomer: the newcomer waits in the bucket's bounded replacement
cache and the caller is asked to ping the least-recently-seen contact; only
if that ping fails does the newcomer take its place (ping-before-evict,
Kademlia §2.2 and §4.1).  One contact per IP:port, and limits per address
prefix per bucket and per table (S/Kademlia's IP diversity), keep one host
from filling the table with made-up IDs (specs/dht.md §5.3 Address limits).
The caller adds only contacts that answered a request of its own (§5.2
Adding a contact).  Everything takes ``now`` from the caller; nothing here
does I/O.
"""

from __future__ import annotations

import enum
import heapq
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from protocol.kademlia.ids import ID_BITS, K, Contact, bucket_index, check_id, is_loopback

#: Contacts waiting to replace a failed one, per bucket (specs/dht.md §5.1).
REPLACEMENT_CACHE_SIZE = 10
#: Contacts one address prefix may hold in one bucket (specs/dht.md §5.3 Address limits).
MAX_PER_PREFIX_PER_BUCKET = 2
#: Contacts one address prefix may hold in the whole table (specs/dht.md §5.3 Address limits).
MAX_PER_PREFIX_PER_TABLE = 10
#: Leading bits of an IPv4 / IPv6 address that name its prefix (§5.3): a /24
#: and a /64 are what one operator typically holds.
IPV4_PREFIX_BITS = 24
IPV6_PREFIX_BITS = 64
#: A bucket untouched for this long is refreshed by a lookup (Kademlia §2.3).
BUCKET_REFRESH_INTERVAL = 3600.0
#: Most contacts a table can hold: every bucket full.
MAX_TABLE_CONTACTS = ID_BITS * K


class AddStatus(enum.Enum):
    """What ``RoutingTable.add`` did with a contact."""

    ADDED = "added"  # new entry in its bucket
    UPDATED = "updated"  # already there; moved to the most-recently-seen end
    CACHED = "cached"  # bucket full: kept in the replacement cache
    ADDRESS_TAKEN = "address-taken"  # another ID holds this IP:port; it is to be pinged first
    MOVED = "moved"  # a known ID at another IP:port; its known address is to be pinged first
    REJECTED = "rejected"  # own ID or prefix limit


def address_prefix(host: str) -> str:
    """The prefix ``host`` counts against: its /24 (IPv4) or /64 (IPv6), else the name itself."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 4:
        return f"{int(ip) >> (32 - IPV4_PREFIX_BITS)}/{IPV4_PREFIX_BITS}"
    return f"{int(ip) >> (128 - IPV6_PREFIX_BITS)}/v6"


@dataclass(frozen=True, slots=True)
class AddResult:
    """The outcome of ``RoutingTable.add``.

    ``ping`` is the contact the caller should ping: the least-recently-seen
    contact of a full bucket (CACHED), the one holding the newcomer's
    IP:port (ADDRESS_TAKEN), or the newcomer's ID at its known address
    (MOVED).  If it answers with its ID call ``seen(ping)``; if not,
    ``remove(ping)`` (and, for ADDRESS_TAKEN and MOVED, ``add`` the newcomer again).
    """

    status: AddStatus
    ping: Contact | None = None


@dataclass(slots=True)
class _Entry:
    contact: Contact
    last_seen: float
    key: int = 0  # the node ID as an integer, for fast XOR sorting
    prefix: str = ""  # the address prefix the contact counts against (§5.3)

    def __post_init__(self) -> None:
        self.key = int.from_bytes(self.contact.node_id, "big")
        self.prefix = address_prefix(self.contact.host)


@dataclass(slots=True)
class _Bucket:
    # dicts keep insertion order: first = least recently seen (Kademlia §2.2).
    entries: dict[bytes, _Entry] = field(default_factory=dict)
    replacements: dict[bytes, _Entry] = field(default_factory=dict)
    last_changed: float = 0.0
    pinging: bytes | None = None


class RoutingTable:
    """A Kademlia routing table for ``own_id``."""

    def __init__(
        self,
        own_id: bytes,
        *,
        k: int = K,
        replacement_cache_size: int = REPLACEMENT_CACHE_SIZE,
        max_per_prefix_per_bucket: int = MAX_PER_PREFIX_PER_BUCKET,
        max_per_prefix_per_table: int = MAX_PER_PREFIX_PER_TABLE,
        loopback_devnet: bool = False,
    ) -> None:
        """``loopback_devnet`` lifts the prefix limits for loopback addresses, where a
        local test network runs all its nodes; it must be asked for (§5.3)."""
        self.own_id = check_id(own_id)
        self.k = k
        self.replacement_cache_size = replacement_cache_size
        self.max_per_prefix_per_bucket = max_per_prefix_per_bucket
        self.max_per_prefix_per_table = max_per_prefix_per_table
        self.loopback_devnet = loopback_devnet
        self._buckets = [_Bucket() for _ in range(ID_BITS)]
        self._prefix_counts: dict[str, int] = {}
        # Who holds each IP:port: at most one contact per address (§5.3).
        self._holders: dict[tuple[str, int], bytes] = {}

    # -- queries ---------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(b.entries) for b in self._buckets)

    def __contains__(self, node_id: object) -> bool:
        return self.get(node_id) is not None if isinstance(node_id, bytes) else False

    def holder(self, address: tuple[str, int]) -> Contact | None:
        """The contact at ``address`` (IP, port), or None."""
        node_id = self._holders.get(address)
        return self.get(node_id) if node_id is not None else None

    def get(self, node_id: bytes) -> Contact | None:
        """The contact with ``node_id``, or None."""
        if len(node_id) != len(self.own_id) or node_id == self.own_id:
            return None
        entry = self._buckets[bucket_index(self.own_id, node_id)].entries.get(node_id)
        return entry.contact if entry else None

    def contacts(self) -> list[Contact]:
        """Every contact, nearest bucket first, least recently seen first."""
        return [e.contact for b in self._buckets for e in b.entries.values()]

    def entries(self) -> list[tuple[Contact, float]]:
        """Every contact with the time it was last seen (for persistence)."""
        return [(e.contact, e.last_seen) for b in self._buckets for e in b.entries.values()]

    def closest(self, target: bytes, count: int | None = None, exclude: bytes | None = None) -> list[Contact]:
        """The ``count`` (default k) contacts closest to ``target`` by XOR."""
        n = self.k if count is None else count
        t = int.from_bytes(target, "big")
        pool = [e for b in self._buckets for e in b.entries.values()]
        best = heapq.nsmallest(n + 1, pool, key=lambda e: e.key ^ t)
        return [e.contact for e in best if e.contact.node_id != exclude][:n]

    def stale_buckets(self, now: float, interval: float = BUCKET_REFRESH_INTERVAL) -> list[int]:
        """Indexes of buckets not changed within ``interval``.

        Only buckets between the nearest and the farthest that hold anything
        are returned: nearer ones cover ranges that are, with overwhelming
        likelihood, empty (their size halves with each index).
        """
        used = [i for i, b in enumerate(self._buckets) if b.entries]
        if not used:
            return []
        return [i for i in range(min(used), max(used) + 1) if now - self._buckets[i].last_changed >= interval]

    def id_in_bucket(self, index: int, random_bytes: bytes) -> bytes:
        """An ID that falls in bucket ``index``, built from 20 caller-supplied random bytes."""
        if not 0 <= index < ID_BITS or len(random_bytes) != len(self.own_id):
            raise ValueError("bucket index or random bytes out of range")
        r = int.from_bytes(random_bytes, "big") & ((1 << index) - 1)
        d = (1 << index) | r
        return (int.from_bytes(self.own_id, "big") ^ d).to_bytes(len(self.own_id), "big")

    # -- updates ---------------------------------------------------------

    def add(self, contact: Contact, now: float) -> AddResult:
        """Record that ``contact`` was heard from at ``now`` (specs/dht.md §5.2)."""
        if contact.node_id == self.own_id:
            return AddResult(AddStatus.REJECTED)
        bucket = self._buckets[bucket_index(self.own_id, contact.node_id)]
        entry = bucket.entries.get(contact.node_id)
        if entry is not None:
            if entry.contact.address != contact.address:
                # A known ID answered at another address (the node restarted on
                # a new port): the known address is pinged first and keeps the
                # ID if it answers, so an ID cannot be hijacked by naming it (§7).
                return AddResult(AddStatus.MOVED, ping=entry.contact)
            del bucket.entries[contact.node_id]
            if contact.public_key or not entry.contact.public_key:
                entry.contact = contact
            entry.last_seen = now
            bucket.entries[contact.node_id] = entry
            bucket.last_changed = now
            return AddResult(AddStatus.UPDATED)
        held_by = self.holder(contact.address)
        if held_by is not None:
            # A new ID at a known IP:port replaces the old one only after the
            # old one fails a ping (§5.3): made-up IDs cannot pile up there.
            return AddResult(AddStatus.ADDRESS_TAKEN, ping=held_by)
        if not self._prefix_allowed(bucket, contact.host):
            return AddResult(AddStatus.REJECTED)
        if len(bucket.entries) < self.k:
            self._insert(bucket, _Entry(contact, now))
            bucket.last_changed = now
            return AddResult(AddStatus.ADDED)
        bucket.replacements.pop(contact.node_id, None)
        bucket.replacements[contact.node_id] = _Entry(contact, now)
        while len(bucket.replacements) > self.replacement_cache_size:
            del bucket.replacements[next(iter(bucket.replacements))]
        if bucket.pinging is not None:
            return AddResult(AddStatus.CACHED)
        head = next(iter(bucket.entries.values())).contact
        bucket.pinging = head.node_id
        return AddResult(AddStatus.CACHED, ping=head)

    def seen(self, node_id: bytes, now: float) -> None:
        """A contact answered: move it to the most-recently-seen end."""
        if node_id == self.own_id or len(node_id) != len(self.own_id):
            return
        bucket = self._buckets[bucket_index(self.own_id, node_id)]
        if bucket.pinging == node_id:
            bucket.pinging = None
        entry = bucket.entries.pop(node_id, None)
        if entry is not None:
            entry.last_seen = now
            bucket.entries[node_id] = entry
            bucket.last_changed = now

    def remove(self, node_id: bytes) -> None:
        """A contact failed: drop it and promote the newest replacement (Kademlia §4.1)."""
        if node_id == self.own_id or len(node_id) != len(self.own_id):
            return
        bucket = self._buckets[bucket_index(self.own_id, node_id)]
        if bucket.pinging == node_id:
            bucket.pinging = None
        bucket.replacements.pop(node_id, None)
        entry = bucket.entries.pop(node_id, None)
        if entry is None:
            return
        self._count_prefix(entry.contact.host, -1)
        self._holders.pop(entry.contact.address, None)
        # Newest replacement first: it was heard from most recently.
        for rid in reversed(list(bucket.replacements)):
            candidate = bucket.replacements.pop(rid)
            if candidate.contact.address not in self._holders and self._prefix_allowed(bucket, candidate.contact.host):
                self._insert(bucket, candidate)
                break

    def touch_bucket(self, target: bytes, now: float) -> None:
        """Mark the bucket covering ``target`` as refreshed by a lookup."""
        if target != self.own_id:
            self._buckets[bucket_index(self.own_id, target)].last_changed = now

    def add_all(self, contacts: Iterable[Contact], now: float) -> None:
        """Add several contacts, ignoring ping requests (used when loading a saved table)."""
        for c in contacts:
            self.add(c, now)
        for b in self._buckets:
            b.pinging = None

    # -- address limits (specs/dht.md §5.3) -------------------------------

    def _insert(self, bucket: _Bucket, entry: _Entry) -> None:
        bucket.entries[entry.contact.node_id] = entry
        self._holders[entry.contact.address] = entry.contact.node_id
        self._count_prefix(entry.contact.host, +1)

    def _prefix_allowed(self, bucket: _Bucket, host: str) -> bool:
        if self.loopback_devnet and is_loopback(host):
            return True
        prefix = address_prefix(host)
        in_bucket = sum(1 for e in bucket.entries.values() if e.prefix == prefix)
        if in_bucket >= self.max_per_prefix_per_bucket:
            return False
        return self._prefix_counts.get(prefix, 0) < self.max_per_prefix_per_table

    def _count_prefix(self, host: str, delta: int) -> None:
        prefix = address_prefix(host)
        n = self._prefix_counts.get(prefix, 0) + delta
        if n > 0:
            self._prefix_counts[prefix] = n
        else:
            self._prefix_counts.pop(prefix, None)

