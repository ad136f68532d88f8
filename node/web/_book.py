"""The files the web page added or opened, with their keys (specs/network.md §Web app, Files book).

The store knows which roots are pinned but not their keys: a link with its
key exists only where it was made or pasted.  The page's Files list shows
every pinned root; for those added through the page (or pinned from an
opened link) this book adds the share link, name, size and time.  It is
``web-files.json`` in the data dir, mode 0600 like every secret there,
rewritten whole and atomically on each change, at most ``MAX_BOOK_ENTRIES``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from node.runtime.config import write_secret_file
from protocol.chunks import Link, LinkError

log = logging.getLogger(__name__)

BOOK_FILE = "web-files.json"
#: Entries kept; the oldest is dropped first (its root stays pinned, shown bare).
MAX_BOOK_ENTRIES = 10_000
#: Longest file name kept (the root manifest's own limit is smaller).
MAX_NAME_CHARS = 1024


@dataclass(frozen=True, slots=True)
class BookEntry:
    """One file: its link (with key), name, plaintext size, media type, unix time added."""

    link: str
    name: str
    size: int
    media_type: str
    added_at: int

    @property
    def root(self) -> bytes:
        return Link.parse(self.link).root


def _entry(raw: object) -> BookEntry | None:
    if not isinstance(raw, dict):
        return None
    try:
        entry = BookEntry(link=str(raw["link"]), name=str(raw["name"])[:MAX_NAME_CHARS], size=int(raw["size"]),
                          media_type=str(raw["media_type"]), added_at=int(raw["added_at"]))
        Link.parse(entry.link)
    except (KeyError, TypeError, ValueError, LinkError):
        return None
    return entry


class FilesBook:
    """The book of one data dir, loaded at start; a damaged file is logged and replaced, never fatal."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / BOOK_FILE
        self._entries: dict[bytes, BookEntry] = {}
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s): starting an empty book", self.path, exc)
            return
        for item in raw.get("files", []) if isinstance(raw, dict) else []:
            entry = _entry(item)
            if entry is not None:
                self._entries[entry.root] = entry

    def get(self, root: bytes) -> BookEntry | None:
        return self._entries.get(root)

    def record(self, entry: BookEntry) -> None:
        """Add or replace the entry of ``entry.root`` and save the book."""
        self._entries.pop(entry.root, None)
        self._entries[entry.root] = entry
        while len(self._entries) > MAX_BOOK_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._save()

    def forget(self, root: bytes) -> None:
        if self._entries.pop(root, None) is not None:
            self._save()

    def _save(self) -> None:
        data = json.dumps({"files": [asdict(e) for e in self._entries.values()]}, indent=1)
        write_secret_file(self.path, data.encode())
