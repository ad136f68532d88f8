"""What a CLI backend returns and reports: results, progress events, errors (README "Exit codes").

Both backends (node/cli/local_backend.py, node/cli/remote_backend.py)
return these frozen dataclasses, and every command prints them with
:func:`to_json` for ``--json``.  A result's parts that only one backend
knows (what the local store saw, what the network cost) are sections:
dataclasses flattened into the JSON object, left out when absent, so each
backend's ``--json`` keeps the keys it always had.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from node.cli.exit_codes import EXIT_FAILURE

# Field metadata: ``SECTION`` fields (a dataclass or a mapping) are merged into
# the enclosing JSON object; ``OPTIONAL`` fields are left out when None.
SECTION: Mapping[str, bool] = {"section": True}
OPTIONAL: Mapping[str, bool] = {"optional": True}


class BackendError(Exception):
    """An operation failed: the message for ``mu: ...`` and the exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Stage(StrEnum):
    """What a progress event is about."""

    ENCRYPTING = "encrypting"  # local add: plaintext bytes read and encrypted
    DECRYPTING = "decrypting"  # local get: plaintext bytes written
    ADDED = "added"  # node add: the file is in the node's store, replication starts
    REPLICATED = "replicated"  # node add: one chunk reached its replicas
    FETCHING = "fetching"  # node get or pin: chunks bought from the network
    SCANNING = "scanning"  # folder snapshot: changed files read into the store
    SCANNED = "scanned"  # folder snapshot: the tree is in the store, the upload starts
    RESTORING = "restoring"  # folder restore: files written


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent:
    """One progress report; ``bytes_total`` is None when the size is not known yet."""

    stage: Stage
    bytes_done: int = 0
    bytes_total: int | None = None
    chunks_done: int = 0
    sats_spent: int = 0
    bytes_per_second: float = 0.0
    chunk_address: str = ""
    replicas: int = 0


OnProgress = Callable[[ProgressEvent], None]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StoredLocally:
    """``mu add`` without a node: what the local store kept."""

    new_chunks: int
    name: str | None
    media_type: str | None
    convergent: bool


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FailedReplica:
    """A replica the node could not store: ``node_id`` None when no node was left to ask."""

    chunk: str
    node_id: str | None
    reason: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Replication:
    """``mu add`` through a node: how far the chunks spread (specs/network.md §6 Control API)."""

    replicas_wanted: int
    replicas_confirmed: int
    under_replicated: int
    announced_to: int
    failed_replicas: tuple[FailedReplica, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AddResult:
    link: str
    root: str
    size: int
    chunks: int
    stored: StoredLocally | None = dataclasses.field(default=None, metadata=SECTION)
    replication: Replication | None = dataclasses.field(default=None, metadata=SECTION)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Decrypted:
    """``mu get`` from the local store: what the manifest said."""

    chunks: int
    name: str | None
    media_type: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """A node's fetch from the network and what it cost (specs/network.md §6 Control API)."""

    chunks_fetched: int
    local_chunks: int
    bytes_fetched: int
    sats_spent: int
    sats_lost: int
    seconds: float
    rate: int
    banned: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RawVerified:
    """``mu get --raw``: the ciphertext chunks checked by the bare root (specs/chunks.md §6.5)."""

    raw: bool = True
    chunks: int
    data_chunks: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GetResult:
    size: int
    path: str | None = None  # None: a raw check, which writes no file
    root: str | None = dataclasses.field(default=None, metadata=OPTIONAL)
    decrypted: Decrypted | None = dataclasses.field(default=None, metadata=SECTION)
    fetched: Fetched | None = dataclasses.field(default=None, metadata=SECTION)
    verified: RawVerified | None = dataclasses.field(default=None, metadata=SECTION)

    def headline(self) -> str:
        """The one line ``mu get`` prints without ``--json``."""
        sats = f", {self.fetched.sats_spent} sats" if self.fetched is not None else ""
        if self.verified is not None:
            where = " into the store" if self.fetched is not None else ""
            return (f"verified {self.verified.chunks} chunks ({self.verified.data_chunks} data, "
                    f"{self.size} bytes of ciphertext){where}{sats}")
        if self.fetched is not None:
            return f"{self.path}: {self.size} bytes{sats}"
        return f"wrote {self.size} bytes to {self.path}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PinResult:
    fetch: GetResult = dataclasses.field(metadata=SECTION)
    announced_to: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    node_id: str
    host: str
    port: int
    mu: bool
    seen_ago_s: float | None  # None: read from the saved table, which keeps no times


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PeersReport:
    node_id: str
    live: bool  # from the running node's table, not the saved file
    peers: tuple[Peer, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PeerEarnings:
    earned: int
    pending: int
    settled: int
    spent: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServiceBalance:
    """Service given and taken, the net the peer owes (negative: we owe), sats paid each way (specs/payments.md §Service balance)."""

    given: int
    taken: int
    net: int
    paid_in: int
    paid_out: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Balances:
    """The service balance with every peer and in total."""

    total: ServiceBalance = dataclasses.field(metadata=SECTION)
    per_peer: Mapping[str, ServiceBalance]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Earnings:
    """Int sats from the ledger: earned, pending in open channels, settled on chain, spent; the service balances."""

    earned: int
    pending: int
    settled: int
    spent: int
    per_peer: Mapping[str, PeerEarnings]
    per_day: Mapping[str, int]
    balances: Balances


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """``GET /v1/status``: the node id, its uptime, and one section per service."""

    node_id: str
    uptime_s: float
    sections: Mapping[str, Any] = dataclasses.field(metadata=SECTION)


def to_json_value(value: Any) -> Any:
    """A result as JSON-ready values (dicts, lists, str, int, float, bool, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and (f.metadata.get("section") or f.metadata.get("optional")):
                continue
            converted = to_json_value(item)
            if f.metadata.get("section"):
                out.update(converted)
            else:
                out[f.name] = converted
        return out
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


def to_json(result: Any, *, indent: int | None = None) -> str:
    """``--json`` output: one JSON object, keys sorted."""
    return json.dumps(to_json_value(result), indent=indent, sort_keys=True)


def peers_from_json(report: Mapping[str, Any]) -> PeersReport:
    """The ``peers_report`` object (node/files/network.py) as a result."""
    return PeersReport(node_id=report["node_id"], live=bool(report["live"]),
                       peers=tuple(Peer(node_id=p["node_id"], host=p["host"], port=int(p["port"]), mu=bool(p["mu"]),
                                        seen_ago_s=p["seen_ago_s"]) for p in report["peers"]))


def earnings_from_json(report: Mapping[str, Any]) -> Earnings:
    """The ledger's earnings report (``Ledger.earnings``, ``GET /v1/earnings``) as a result."""
    return Earnings(earned=int(report["earned"]), pending=int(report["pending"]), settled=int(report["settled"]),
                    spent=int(report["spent"]),
                    per_peer={peer: PeerEarnings(earned=int(row["earned"]), pending=int(row["pending"]),
                                                 settled=int(row["settled"]), spent=int(row["spent"]))
                              for peer, row in report["per_peer"].items()},
                    per_day={day: int(amount) for day, amount in report["per_day"].items()},
                    balances=Balances(total=_service_balance(report["balances"]),
                                      per_peer={peer: _service_balance(row)
                                                for peer, row in report["balances"]["per_peer"].items()}))


def _service_balance(row: Mapping[str, Any]) -> ServiceBalance:
    return ServiceBalance(given=int(row["given"]), taken=int(row["taken"]), net=int(row["net"]),
                          paid_in=int(row["paid_in"]), paid_out=int(row["paid_out"]))
