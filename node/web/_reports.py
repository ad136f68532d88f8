"""What the Earnings, Network and Settings pages show (specs/network.md §Web app).

Read from the same sources as ``mu channels``, ``mu peers`` and ``mu config
show``; a channel is closed as ``mu channels close`` does it (marked
closing; the node's settlement pass broadcasts the close).  Settings are
saved to the data dir's ``config.toml``.  The storage limit also applies at
once (the store checks it at each write); prices, free allowance and
retention are the node's signed terms, which peers verified and hold
(specs/payments.md §3 Terms), so they change only with the node's next
start, when it signs new ones.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from node.dht import DhtNode
from node.files.speeds import HostSpeeds
from node.ledger import Ledger
from node.runtime.config import write_secret_file
from node.runtime.settings import CONFIG_FILE, DEFAULTS, coerce, read_config_file
from protocol.kademlia.ids import K
from protocol.payments.vocabulary import ChannelStatus, Direction, Role

Json = dict[str, Any]

#: Payments read to list the hosts used recently (newest last).
RECENT_PAYMENTS = 1000
#: The settings the page edits, each a non-negative integer (``quota``: empty for no limit).
SETTINGS_SHOWN = ("price_get", "price_put", "free_allowance", "quota", "retention")
#: The settings a running node takes at once when the page saves them.
SETTINGS_LIVE = ("quota",)
#: Largest value the page accepts for any of them (a typo guard, not a policy).
MAX_SETTING = 10**15


def channels_report(ledger: Ledger) -> Json:
    """Every channel, newest first, as the Earnings page lists them."""
    channels = [{"channel_id": c.channel_id, "role": c.role.value, "peer": c.peer, "state": c.state.value,
                 "capacity": c.capacity, "total": c.total, "expiry": c.expiry, "opened_at": c.opened_at,
                 "closable": c.role == Role.PAYEE and c.state == ChannelStatus.OPEN}
                for c in ledger.channels()]
    channels.sort(key=lambda c: -float(c["opened_at"]))
    return {"channels": channels}


def close_channel(ledger: Ledger, channel_id: str) -> Json:
    """Mark an open channel we are paid through as closing (``mu channels close``).

    Raises:
        LookupError: no such channel.
        ValueError: we are its payer, or it is not open.
    """
    record = ledger.channel(channel_id)
    if record is None:
        raise LookupError(f"no channel {channel_id}")
    if record.role != Role.PAYEE:
        raise ValueError(f"only the payee can close {channel_id}; the node refunds it after height {record.expiry}")
    if record.state != ChannelStatus.OPEN:
        raise ValueError(f"channel {channel_id} is already {record.state.value}")
    ledger.set_channel_state(channel_id, ChannelStatus.CLOSING)
    return {"channel_id": channel_id, "state": ChannelStatus.CLOSING.value}


def hosts_report(ledger: Ledger) -> list[Json]:
    """Hosts we paid lately: requests, sats, the last price per MiB, when last used; newest first."""
    hosts: dict[str, Json] = {}
    for p in ledger.payments()[-RECENT_PAYMENTS:]:
        if p.direction != Direction.OUT:
            continue
        row = hosts.setdefault(p.peer, {"node_id": p.peer, "requests": 0, "sats": 0, "first_at": p.at})
        row.update(requests=row["requests"] + 1, sats=row["sats"] + p.amount, price_per_mib=p.price,
                   kind=p.kind.value, last_at=p.at)
    return sorted(hosts.values(), key=lambda h: -float(h["last_at"]))


def with_speeds(hosts: list[Json], speeds: HostSpeeds) -> list[Json]:
    """Each paid host with its recent speed (null when no transfer was timed since the node started)."""
    rows = []
    for host in hosts:
        speed = speeds.get(bytes.fromhex(host["node_id"]))
        rows.append({**host, "bytes_per_s": None if speed is None else round(speed.bytes_per_s),
                     "transfers_timed": 0 if speed is None else speed.transfers})
    return rows


def dht_size_estimate(node_id: bytes, peers: list[bytes]) -> int:
    """Nodes in the DHT, estimated from how close our K nearest peers are (specs/dht.md).

    With fewer than K peers known our table holds the whole network.  Else
    node IDs are uniform in the 2^256 space, so the K nearest of N nodes lie
    within about K / N of it: N ~ K * 2^256 / distance to the K-th nearest.
    """
    if len(peers) < K:
        return len(peers) + 1
    own = int.from_bytes(node_id, "big")
    distances = sorted(own ^ int.from_bytes(p, "big") for p in peers)
    return max(len(peers) + 1, (K << 256) // max(1, distances[K - 1]))


def network_report(dht: DhtNode) -> Json:
    """Peers in the routing table and the DHT size estimate (the trio side: the table is not thread-safe)."""
    now = dht.now()
    entries = dht.table.entries()
    peers = [{"node_id": c.node_id.hex(), "host": c.host, "port": c.port, "mu": c.is_mu,
              "seen_ago_s": round(max(0.0, now - seen), 3)} for c, seen in entries]
    return {"node_id": dht.node_id.hex(), "peers": peers,
            "dht_size_estimate": dht_size_estimate(dht.node_id, [c.node_id for c, _ in entries])}


def read_settings(data_dir: Path) -> Json:
    """The editable settings as ``config.toml`` and the defaults give them (flags are not seen here)."""
    values = {**{n: getattr(DEFAULTS, n) for n in SETTINGS_SHOWN}, **read_config_file(data_dir / CONFIG_FILE)}
    return {"settings": {n: values[n] for n in SETTINGS_SHOWN}, "file": str(data_dir / CONFIG_FILE),
            "applies": "at the next start of the node", "applies_now": list(SETTINGS_LIVE)}


def save_settings(data_dir: Path, changes: Json) -> Json:
    """Check ``changes`` and write them into ``config.toml``, keeping its other keys.

    Raises:
        ValueError: a value is not a non-negative integer within bounds; the
            message names the setting, and nothing is written.
    """
    for name, value in changes.items():
        if name not in SETTINGS_SHOWN:
            raise ValueError(f"{name} is not a setting the page edits")
        coerce(name, value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SETTING:
            raise ValueError(f"{name} must be a whole number from 0 to {MAX_SETTING}")
    if changes.get("retention") == 0:
        raise ValueError("retention must be at least 1 second")
    path = data_dir / CONFIG_FILE
    current = read_config_file(path)
    current.update(changes)
    lines = [f"{name} = {_toml(value)}" for name, value in current.items() if value is not None]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what we write must read back
    write_secret_file(path, text.encode())
    return read_settings(data_dir)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

