"""A synced folder's disk side (specs/sync.md): change detection and applying remote changes.

``detect`` turns filesystem events (``watch``: the ``watchdog`` package)
and periodic rescans into local changes against the scan index (``scan``),
honouring ``.muignore`` (``ignore``); ``apply`` writes remote versions with
a temporary file and a rename, keeping a racing local edit as a conflict
copy; ``engine`` runs one device's rounds: scan, publish its own record
(specs/sync.md §14 Devices), resolve and check the others', merge, apply;
``notify`` sends and admits SYNC_NOTIFY (§16 Notify); ``service`` runs the
rounds in the node.  The rules (version vectors, the merge) are ``protocol.sync``.
"""

from .apply import Applied, ApplyError, delete_path, make_directory, move_path, set_metadata, write_file, write_symlink
from .detect import (
    DEBOUNCE_SECONDS,
    MAX_DEBOUNCE_SECONDS,
    MAX_PENDING_PATHS,
    RESCAN_SECONDS,
    RESTLESS_SECONDS,
    SETTLE_SECONDS,
    ChangeDetector,
    EventQueue,
    LocalChange,
)
from .ignore import IGNORE_FILE, MAX_IGNORE_FILE_BYTES, TEMP_PREFIX, IgnoreFileError, IgnoreRules
from .scan import MAX_SCAN_ENTRIES, ScanError, ScanRecord, look, scan_tree
from .watch import open_watcher, watch_folder

__all__ = [
    "Applied", "ApplyError", "delete_path", "make_directory", "move_path", "set_metadata", "write_file",
    "write_symlink", "DEBOUNCE_SECONDS", "MAX_DEBOUNCE_SECONDS", "MAX_PENDING_PATHS", "RESCAN_SECONDS",
    "RESTLESS_SECONDS", "SETTLE_SECONDS", "ChangeDetector", "EventQueue", "LocalChange", "IGNORE_FILE",
    "MAX_IGNORE_FILE_BYTES",
    "TEMP_PREFIX", "IgnoreFileError", "IgnoreRules", "MAX_SCAN_ENTRIES", "ScanError", "ScanRecord", "look",
    "scan_tree", "open_watcher", "watch_folder",
]
