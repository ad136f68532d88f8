"""The running node's mutable-name routes (specs/network.md §6 Control API, specs/dht.md §7.3).

``POST /v1/name/resolve`` finds the newest record of a public key in the
DHT; ``POST /v1/name/publish`` stores a record the CLI has already signed,
and the node keeps republishing it.  The signing seed never reaches the node:
the CLI signs, the node only carries.
"""

from __future__ import annotations

from typing import Any

from node.api.control import ControlError, ControlServer, Param, ParamKind
from node.dht import DhtNode
from protocol.kademlia.mutable import MAX_MUTABLE_RECORD_SIZE, MutableRecord
from protocol.kademlia.wire import RemoteProtocolError

Json = dict[str, Any]


def record_json(record: MutableRecord) -> Json:
    """A record as the routes and ``mu name resolve --json`` show it."""
    return {"public_key": record.public_key.hex(), "key": record.key.hex(), "seq": record.seq,
            "value": record.value.hex(), "record": record.serialize().hex()}


def _hex_field(body: Json, name: str, max_bytes: int) -> bytes:
    text = body.get(name)
    if not isinstance(text, str) or len(text) > 2 * max_bytes:
        raise ControlError(400, "bad-argument", f"{name} must be a hex string of at most {max_bytes} bytes")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ControlError(400, "bad-argument", f"{name} is not hex") from None


def register_name_routes(control: ControlServer, dht: DhtNode) -> None:
    """Serve ``POST /v1/name/resolve`` and ``POST /v1/name/publish`` through ``dht``."""

    async def resolve(body: Json) -> Json:
        public_key = _hex_field(body, "public_key", 32)
        if len(public_key) != 32:
            raise ControlError(400, "bad-argument", "public_key must be 32 bytes (64 hex digits)")
        record = await dht.resolve_record(public_key)
        if record is None:
            raise ControlError(404, "not-found", f"no record for {public_key.hex()} in the DHT")
        return record_json(record)

    async def publish(body: Json) -> Json:
        try:
            record = MutableRecord.parse(_hex_field(body, "record", MAX_MUTABLE_RECORD_SIZE))
        except RemoteProtocolError as exc:
            raise ControlError(400, "bad-argument", f"record: {exc}") from None
        try:
            stored = await dht.publish_record(record)
        except ValueError as exc:  # the node already republishes as many names as it may
            raise ControlError(409, "over-limit", str(exc)) from None
        return {**record_json(record), "stored": stored}

    control.route("POST", "name/resolve", resolve, params={"public_key": Param(ParamKind.STRING, required=True)})
    control.route("POST", "name/publish", publish, params={"record": Param(ParamKind.STRING, required=True)})
