"""The routing table file in the data dir (specs/dht.md §10)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from protocol.kademlia.ids import Contact
from protocol.kademlia.table_file import MAX_TABLE_FILE_SIZE, TableFileError, decode_table, encode_table

log = logging.getLogger("mu.dht")

#: File name of the saved routing table inside the data dir.
TABLE_FILE = "dht-table.json"


def table_path(data_dir: Path) -> Path:
    return data_dir / TABLE_FILE


def load_table(data_dir: Path, own_id: bytes) -> list[Contact]:
    """Contacts saved in the data dir, or none if the file is absent or unusable."""
    path = table_path(data_dir)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TABLE_FILE_SIZE + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return []
    try:
        return decode_table(data, own_id)
    except TableFileError as exc:
        log.warning("ignoring saved routing table %s: %s", path, exc)
        return []


def save_table(data_dir: Path, own_id: bytes, contacts: Iterable[Contact]) -> None:
    """Write the table atomically: temporary file, fsync, rename."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = table_path(data_dir)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(encode_table(own_id, contacts))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
