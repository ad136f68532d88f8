"""Folder sync's rules, sans I/O (specs/sync.md).

Device certificates, per-device records and the roster, version vectors,
each device's state of a folder and its canonical
encoding, local changes, and the merge of several devices' states into a
plan (what to fetch, move, delete, keep, which conflict copies to make).
``node.sync`` watches the disk and applies plans.
"""

from protocol.sync.device import (
    CERTIFICATE_LABEL,
    DEVICE_RECORD_SIZE,
    MAX_DEVICES,
    DeviceRecord,
    certificate_valid,
    certify_device,
    decode_device_record,
    decode_roster,
    encode_roster,
    parse_device_state,
    state_root,
)
from protocol.sync.merge import (
    CONFLICT_DEVICE_CHARS,
    CONFLICT_MARKER,
    MAX_CONFLICT_ATTEMPTS,
    ConflictCopy,
    Delete,
    MergePlan,
    Move,
    SetMetadata,
    Write,
    conflict_name,
    merge,
    resolve,
)
from protocol.sync.state import (
    MAX_CONTENT_BYTES,
    MAX_ENTRIES,
    MAX_PATH_BYTES,
    MAX_STATE_BYTES,
    STATE_VERSION,
    EntryKind,
    FileEntry,
    FolderState,
    Observation,
    check_path,
    record_local_change,
    record_local_changes,
)
from protocol.sync.vector import (
    DEVICE_ID_SIZE,
    MAX_COUNTER,
    MAX_VECTOR_DEVICES,
    Ordering,
    SyncError,
    VersionVector,
    check_device,
    join_all,
)

__all__ = [
    "CERTIFICATE_LABEL", "DEVICE_RECORD_SIZE", "MAX_DEVICES", "DeviceRecord", "certificate_valid",
    "certify_device", "decode_device_record", "decode_roster", "encode_roster", "parse_device_state", "state_root",
    "CONFLICT_DEVICE_CHARS", "CONFLICT_MARKER", "MAX_CONFLICT_ATTEMPTS", "ConflictCopy", "Delete", "MergePlan",
    "Move", "SetMetadata", "Write", "conflict_name", "merge", "resolve",
    "MAX_CONTENT_BYTES", "MAX_ENTRIES", "MAX_PATH_BYTES", "MAX_STATE_BYTES", "STATE_VERSION", "EntryKind",
    "FileEntry", "FolderState", "Observation", "check_path", "record_local_change", "record_local_changes",
    "DEVICE_ID_SIZE", "MAX_COUNTER", "MAX_VECTOR_DEVICES", "Ordering", "SyncError", "VersionVector",
    "check_device", "join_all",
]
