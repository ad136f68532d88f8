"""The routing table on disk (specs/dht.md §10): UTF-8 JSON, never pickle.

    {"format": "mu-dht-table", "version": 1, "node_id": "<40 hex>",
     "contacts": [{"id": "<40 hex>", "host": "127.0.0.1", "port": 4000,
                   "public_key": "<64 hex or empty>"}, ...]}

Contacts appear nearest bucket first, least recently seen first within a
bucket, so adding them back in file order rebuilds the same order.  A file
written for another node ID is refused: its buckets would be meaningless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from protocol.identity import node_id_from_public_key
from protocol.kademlia.ids import Contact, KademliaError
from protocol.kademlia.routing import MAX_TABLE_CONTACTS

TABLE_FORMAT = "mu-dht-table"
TABLE_VERSION = 1
#: Largest table file read back, bytes (specs/dht.md §10).
MAX_TABLE_FILE_SIZE = 1 << 20


class TableFileError(ValueError):
    """The saved table is unreadable or belongs to another node."""


def encode_table(own_id: bytes, contacts: Iterable[Contact]) -> bytes:
    """Serialize a table's contacts for ``own_id``."""
    items = [
        {"id": c.node_id.hex(), "host": c.host, "port": c.port, "public_key": c.public_key.hex()}
        for c in contacts
    ]
    doc = {"format": TABLE_FORMAT, "version": TABLE_VERSION, "node_id": own_id.hex(), "contacts": items[:MAX_TABLE_CONTACTS]}
    return (json.dumps(doc, indent=1) + "\n").encode()


def decode_table(data: bytes, own_id: bytes) -> list[Contact]:
    """Parse a saved table; entries that do not validate are skipped."""
    if len(data) > MAX_TABLE_FILE_SIZE:
        raise TableFileError(f"table file exceeds {MAX_TABLE_FILE_SIZE} bytes")
    try:
        doc = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise TableFileError(f"table file is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT or doc.get("version") != TABLE_VERSION:
        raise TableFileError("not a version-1 mu-dht-table file")
    if doc.get("node_id") != own_id.hex():
        raise TableFileError("table file belongs to another node id")
    raw = doc.get("contacts")
    if not isinstance(raw, list):
        raise TableFileError("contacts is not a list")
    out: list[Contact] = []
    for item in raw[:MAX_TABLE_CONTACTS]:
        try:
            if not isinstance(item, dict):
                continue
            node_id = bytes.fromhex(item["id"])
            key = bytes.fromhex(item.get("public_key", ""))
            if key and node_id_from_public_key(key) != node_id:
                key = b""  # a key that does not hash to the ID proves nothing
            out.append(Contact(node_id, item["host"], item["port"], key))
        except (KeyError, TypeError, ValueError, KademliaError):
            continue
    return out
