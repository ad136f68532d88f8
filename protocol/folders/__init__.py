"""Encrypted folder snapshots: capabilities, manifests, snapshot records, history (specs/folders.md).

Pure: bytes in, values out.  ``node/folders`` scans the file system, stores
the chunks and publishes the record; this package decides what the bytes are.
"""

from ._caps import (
    CHUNK_SECRET_SIZE,
    MAX_CAP_CHARS,
    READ_KEY_SIZE,
    CapError,
    FolderCap,
    ReadCap,
    VerifyCap,
    WriteCap,
    chunk_list_secret,
    chunk_secret_from_read_key,
    parse_cap,
    parse_read_cap,
    parse_write_cap,
    read_key_from_seed,
)
from ._chunklist import MAX_LIST_ADDRESSES, ChunkList
from ._history import KEEP_ALL_DAYS, KEEP_DAILY_DAYS, Changes, diff, retained, retained_numbers
from ._manifest import (
    FORMAT_VERSION,
    LISTED_VALUE_SIZE,
    MAX_ENTRIES,
    MAX_MANIFEST_BYTES,
    MAX_PATH_BYTES,
    MAX_TARGET_BYTES,
    RECORD_VALUE_SIZE,
    Entry,
    EntryKind,
    FolderFormatError,
    Snapshot,
    decode_manifest,
    decode_record_value,
    encode_manifest,
    encode_record_value,
    record_chunk_list,
    record_root,
)

__all__ = [
    "CHUNK_SECRET_SIZE", "FORMAT_VERSION", "KEEP_ALL_DAYS", "KEEP_DAILY_DAYS", "LISTED_VALUE_SIZE", "MAX_CAP_CHARS", "MAX_ENTRIES",
    "MAX_LIST_ADDRESSES",
    "MAX_MANIFEST_BYTES", "MAX_PATH_BYTES", "MAX_TARGET_BYTES", "READ_KEY_SIZE", "RECORD_VALUE_SIZE",
    "CapError", "Changes", "ChunkList", "Entry", "EntryKind", "FolderCap", "FolderFormatError", "ReadCap", "Snapshot",
    "VerifyCap", "WriteCap", "chunk_list_secret", "chunk_secret_from_read_key", "decode_manifest", "decode_record_value", "diff",
    "encode_manifest", "encode_record_value", "parse_cap", "parse_read_cap", "parse_write_cap",
    "read_key_from_seed", "record_chunk_list", "record_root", "retained", "retained_numbers",
]
