"""Bounded stores for plain values and provider records (specs/dht.md §8).

The ``kademlia`` package keeps whatever anyone stores, forever, in memory.
Here every store is bounded by size (checked in ``wire.check_value`` and by
the record parsers), by total count, by count per source IP, and by time.
Both stores take ``now`` from the caller and raise ``RemoteProtocolError``
with ``OVER_LIMIT`` when a peer asks for more than its share.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.kademlia.records import ProviderRecord
from protocol.kademlia.wire import ErrorCode, RemoteProtocolError

#: Values (from ``store``) held in total (specs/dht.md §8).
MAX_STORED_VALUES = 4096
#: Values one source IP may have stored at once.
MAX_VALUES_PER_PEER = 64
#: Seconds a stored value lives unless stored again (stock nodes republish hourly).
VALUE_TTL = 24 * 3600.0
#: Keys with at least one provider record.
MAX_PROVIDER_KEYS = 4096
#: Provider records per key.
MAX_PROVIDERS_PER_KEY = 20
#: Provider records one announcing IP may have stored at once.
MAX_PROVIDERS_PER_PEER = 256


@dataclass(slots=True)
class _Value:
    value: object
    owner: str
    expires_at: float


class ValueStore:
    """Values stored by ``store`` RPCs, keyed by 20-byte key."""

    def __init__(self, *, max_values: int = MAX_STORED_VALUES, max_per_peer: int = MAX_VALUES_PER_PEER,
                 ttl: float = VALUE_TTL) -> None:
        self.max_values = max_values
        self.max_per_peer = max_per_peer
        self.ttl = ttl
        self._values: dict[bytes, _Value] = {}
        self._per_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._values)

    def put(self, key: bytes, value: object, peer_ip: str, now: float) -> None:
        """Store ``value`` under ``key`` on behalf of ``peer_ip``."""
        old = self._values.get(key)
        if old is not None and old.expires_at <= now:
            self._drop(key)
            old = None
        if old is None or old.owner != peer_ip:
            if self._per_peer.get(peer_ip, 0) >= self.max_per_peer:
                raise RemoteProtocolError(ErrorCode.OVER_LIMIT, f"{peer_ip} already stores {self.max_per_peer} values")
            if old is None and len(self._values) >= self.max_values:
                self.expire(now)
                if len(self._values) >= self.max_values:
                    raise RemoteProtocolError(ErrorCode.OVER_LIMIT, f"value store full ({self.max_values})")
        if old is not None:
            self._drop(key)
        self._values[key] = _Value(value, peer_ip, now + self.ttl)
        self._per_peer[peer_ip] = self._per_peer.get(peer_ip, 0) + 1

    def get(self, key: bytes, now: float) -> object | None:
        """The live value under ``key``, or None."""
        v = self._values.get(key)
        if v is None:
            return None
        if v.expires_at <= now:
            self._drop(key)
            return None
        return v.value

    def expire(self, now: float) -> int:
        """Drop values past their TTL; return how many went."""
        dead = [k for k, v in self._values.items() if v.expires_at <= now]
        for k in dead:
            self._drop(k)
        return len(dead)

    def _drop(self, key: bytes) -> None:
        v = self._values.pop(key)
        n = self._per_peer[v.owner] - 1
        if n:
            self._per_peer[v.owner] = n
        else:
            del self._per_peer[v.owner]


@dataclass(slots=True)
class _Provided:
    record: ProviderRecord
    announcer: str


class ProviderStore:
    """Verified provider records, keyed by DHT key then provider node ID."""

    def __init__(self, *, max_keys: int = MAX_PROVIDER_KEYS, max_per_key: int = MAX_PROVIDERS_PER_KEY,
                 max_per_peer: int = MAX_PROVIDERS_PER_PEER) -> None:
        self.max_keys = max_keys
        self.max_per_key = max_per_key
        self.max_per_peer = max_per_peer
        self._keys: dict[bytes, dict[bytes, _Provided]] = {}
        self._per_peer: dict[str, int] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._keys.values())

    def add(self, record: ProviderRecord, announcer_ip: str, now: float) -> None:
        """Keep ``record`` (already verified) announced from ``announcer_ip``."""
        self.expire(now)
        providers = self._keys.get(record.key)
        old = providers.get(record.node_id) if providers else None
        if old is not None:
            if record.expires_at < old.record.expires_at:
                return  # an older copy cannot shorten a live record
            self._remove(record.key, record.node_id)
            providers = self._keys.get(record.key)
        if self._per_peer.get(announcer_ip, 0) >= self.max_per_peer:
            raise RemoteProtocolError(ErrorCode.OVER_LIMIT, f"{announcer_ip} already announced {self.max_per_peer} records")
        if providers is None:
            if len(self._keys) >= self.max_keys:
                raise RemoteProtocolError(ErrorCode.OVER_LIMIT, f"provider store holds {self.max_keys} keys")
            providers = self._keys[record.key] = {}
        if len(providers) >= self.max_per_key:
            # Full: the new record may take the place of the one expiring first.
            first = min(providers.values(), key=lambda p: p.record.expires_at)
            if first.record.expires_at >= record.expires_at:
                raise RemoteProtocolError(ErrorCode.OVER_LIMIT, f"key already has {self.max_per_key} providers")
            self._remove(record.key, first.record.node_id)
            providers = self._keys.setdefault(record.key, {})
        providers[record.node_id] = _Provided(record, announcer_ip)
        self._per_peer[announcer_ip] = self._per_peer.get(announcer_ip, 0) + 1

    def get(self, key: bytes, now: float) -> list[ProviderRecord]:
        """Live records for ``key``, latest expiry first."""
        providers = self._keys.get(key, {})
        live = [p.record for p in providers.values() if p.record.expires_at > now]
        return sorted(live, key=lambda r: r.expires_at, reverse=True)

    def expire(self, now: float) -> int:
        """Drop expired records; return how many went."""
        dead = [(k, nid) for k, ps in self._keys.items() for nid, p in ps.items() if p.record.expires_at <= now]
        for k, nid in dead:
            self._remove(k, nid)
        return len(dead)

    def _remove(self, key: bytes, node_id: bytes) -> None:
        providers = self._keys[key]
        p = providers.pop(node_id)
        if not providers:
            del self._keys[key]
        n = self._per_peer[p.announcer] - 1
        if n:
            self._per_peer[p.announcer] = n
        else:
            del self._per_peer[p.announcer]
