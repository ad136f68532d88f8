"""Folder manifests, snapshot records and the record value (specs/folders.md §5-§7).

All three are canonical msgpack (or fixed-width bytes): the encoder has one
output for one value, and the decoders refuse anything else (a re-encoding
that differs, trailing bytes, unknown versions, out-of-range fields) before
the caller sees a value.  The manifest and the snapshot record travel only
inside encrypted chunks (stored "like a file", specs/chunks.md §6), so
names, sizes and times are never visible to a host.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass

import msgpack

from protocol.chunks import ADDRESS_SIZE, KEY_SIZE, Link, LinkError

from ._caps import chunk_list_pad

FORMAT_VERSION = 1
# Bounds (specs/folders.md §3 Definitions and defaults).
MAX_ENTRIES = 1_000_000
MAX_PATH_BYTES = 4096
MAX_TARGET_BYTES = 4096
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
MAX_SNAPSHOT_BYTES = 1024
MAX_MODE = 0o7777
MIN_MTIME_NS = -(2**63)
MAX_MTIME_NS = 2**63 - 1
MAX_SIZE = 2**64 - 1
LINK_BYTES = ADDRESS_SIZE + KEY_SIZE
RECORD_VALUE_SIZE = 1 + ADDRESS_SIZE + KEY_SIZE
# specs/folders.md §7 Record value: version 2 adds the snapshot's chunk list (§7.1).
LISTED_VALUE_VERSION = 2
LISTED_VALUE_SIZE = RECORD_VALUE_SIZE + ADDRESS_SIZE + KEY_SIZE


class FolderFormatError(ValueError):
    """A manifest, snapshot record or record value is malformed."""


class EntryKind(enum.IntEnum):
    """What a manifest entry is; the numbers are on the wire (§5 Folder manifest)."""

    FILE = 0
    DIR = 1
    SYMLINK = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One path of a snapshot: a file (with its link), a directory or a symlink (with its target)."""

    path: bytes  # relative, '/'-separated, as the file system spells it
    kind: EntryKind
    mode: int  # permission bits (st_mode & 0o7777)
    mtime_ns: int
    size: int = 0  # file: bytes; symlink: len(target); dir: 0
    link: Link | None = None  # file only
    target: bytes | None = None  # symlink only

    def __post_init__(self) -> None:
        _check_path(self.path)
        if not 0 <= self.mode <= MAX_MODE:
            raise FolderFormatError(f"{self.path!r}: mode {self.mode:o} is not permission bits")
        if not MIN_MTIME_NS <= self.mtime_ns <= MAX_MTIME_NS:
            raise FolderFormatError(f"{self.path!r}: mtime out of range")
        if self.kind is EntryKind.FILE:
            ok = (self.link is not None and self.link.key is not None and self.target is None
                  and 0 <= self.size <= MAX_SIZE)
        elif self.kind is EntryKind.SYMLINK:
            ok = (self.link is None and self.target is not None and 0 < len(self.target) <= MAX_TARGET_BYTES
                  and b"\0" not in self.target and self.size == len(self.target))
        else:
            ok = self.link is None and self.target is None and self.size == 0
        if not ok:
            raise FolderFormatError(f"{self.path!r}: fields do not fit a {self.kind.name.lower()} entry")


def _check_path(path: bytes) -> None:
    if not isinstance(path, bytes) or not 0 < len(path) <= MAX_PATH_BYTES:
        raise FolderFormatError(f"a path is 1..{MAX_PATH_BYTES} bytes")
    if b"\0" in path or any(part in (b"", b".", b"..") for part in path.split(b"/")):
        raise FolderFormatError(f"{path!r} is not a plain relative path")


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(data: bytes, limit: int, what: str, *, max_bin: int = max(MAX_PATH_BYTES, MAX_TARGET_BYTES, LINK_BYTES)
            ) -> object:
    if len(data) > limit:
        raise FolderFormatError(f"{what} is {len(data)} bytes, more than {limit}")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=limit, max_bin_len=max_bin,
                                max_str_len=0, max_array_len=MAX_ENTRIES, max_map_len=0, max_ext_len=0)
    unpacker.feed(data)
    try:
        value = unpacker.unpack()
    except msgpack.OutOfData:  # truncated (or empty): never a value
        raise FolderFormatError(f"{what} is truncated") from None
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise FolderFormatError(f"{what} is not valid msgpack: {exc}") from None
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        pass
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise FolderFormatError(f"{what} is not valid msgpack: {exc}") from None
    else:
        raise FolderFormatError(f"{what} has trailing bytes")
    if _pack(value) != data:
        raise FolderFormatError(f"{what} is not canonical msgpack")
    return value


def _link_bytes(link: Link) -> bytes:
    assert link.key is not None
    return link.root + link.key


def _parse_link(raw: object, what: str) -> Link:
    if not isinstance(raw, bytes) or len(raw) != LINK_BYTES:
        raise FolderFormatError(f"{what} must be {LINK_BYTES} bytes (root and key)")
    try:
        return Link(raw[:ADDRESS_SIZE], raw[ADDRESS_SIZE:])
    except LinkError as exc:
        raise FolderFormatError(f"{what}: {exc}") from None


def encode_manifest(entries: list[Entry] | tuple[Entry, ...]) -> bytes:
    """The folder manifest: ``[1, [entry, ...]]``, entries in byte order of path (§5 Folder manifest)."""
    ordered = sorted(entries, key=lambda e: e.path)
    _check_tree(ordered)
    rows = []
    for e in ordered:
        ref = _link_bytes(e.link) if e.link is not None else e.target
        rows.append([e.path, int(e.kind), e.mode, e.mtime_ns, e.size, ref])
    return _pack([FORMAT_VERSION, rows])


def _check_tree(entries: list[Entry]) -> None:
    if len(entries) > MAX_ENTRIES:
        raise FolderFormatError(f"more than {MAX_ENTRIES} entries")
    dirs: set[bytes] = set()
    previous = b""
    for e in entries:
        if e.path <= previous:
            raise FolderFormatError(f"{e.path!r}: entries must be sorted by path, each once")
        parent = e.path.rpartition(b"/")[0]
        if parent and parent not in dirs:
            raise FolderFormatError(f"{e.path!r}: its directory is not an entry before it")
        if e.kind is EntryKind.DIR:
            dirs.add(e.path)
        previous = e.path


def decode_manifest(data: bytes) -> tuple[Entry, ...]:
    """Parse and check a folder manifest; raise FolderFormatError on any flaw."""
    value = _unpack(data, MAX_MANIFEST_BYTES, "folder manifest")
    if not isinstance(value, list) or len(value) != 2 or value[0] != FORMAT_VERSION or not isinstance(value[1], list):
        raise FolderFormatError(f"a folder manifest is [{FORMAT_VERSION}, entries]")
    entries = []
    for row in value[1]:
        if not isinstance(row, list) or len(row) != 6:
            raise FolderFormatError("a manifest entry has 6 fields")
        path, kind, mode, mtime_ns, size, ref = row
        if not (isinstance(path, bytes) and type(kind) is int and type(mode) is int and type(mtime_ns) is int
                and type(size) is int):
            raise FolderFormatError("a manifest entry has a field of the wrong type")
        try:
            entry_kind = EntryKind(kind)
        except ValueError:
            raise FolderFormatError(f"{path!r}: unknown entry kind {kind}") from None
        if entry_kind is EntryKind.FILE:
            entries.append(Entry(path=path, kind=entry_kind, mode=mode, mtime_ns=mtime_ns, size=size,
                                 link=_parse_link(ref, f"{path!r}: file link")))
        elif entry_kind is EntryKind.SYMLINK:
            if not isinstance(ref, bytes):
                raise FolderFormatError(f"{path!r}: a symlink's target is bytes")
            entries.append(Entry(path=path, kind=entry_kind, mode=mode, mtime_ns=mtime_ns, size=size, target=ref))
        else:
            if ref is not None:
                raise FolderFormatError(f"{path!r}: a directory has no reference")
            entries.append(Entry(path=path, kind=entry_kind, mode=mode, mtime_ns=mtime_ns, size=size))
    _check_tree(entries)
    return tuple(entries)


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One snapshot: its manifest, its predecessor, when, and what it holds (§6 Snapshot record)."""

    number: int  # 1 for the first snapshot, predecessor's + 1 after
    time_ns: int  # wall clock of the snapshotting node, ns since the Unix epoch (UTC)
    manifest: Link
    previous: Link | None
    files: int
    dirs: int
    symlinks: int
    size: int  # sum of file sizes

    def __post_init__(self) -> None:
        if self.number < 1 or (self.number == 1) != (self.previous is None):
            raise FolderFormatError("snapshot 1 has no predecessor; every later one has one")
        if min(self.files, self.dirs, self.symlinks, self.size, self.time_ns) < 0 or self.size > MAX_SIZE:
            raise FolderFormatError("snapshot counts and time are non-negative")
        if self.manifest.key is None or (self.previous is not None and self.previous.key is None):
            raise FolderFormatError("a snapshot's links carry their keys")

    def encode(self) -> bytes:
        previous = _link_bytes(self.previous) if self.previous is not None else None
        return _pack([FORMAT_VERSION, self.number, self.time_ns, _link_bytes(self.manifest), previous,
                      self.files, self.dirs, self.symlinks, self.size])

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        value = _unpack(data, MAX_SNAPSHOT_BYTES, "snapshot record")
        if not isinstance(value, list) or len(value) != 9 or value[0] != FORMAT_VERSION:
            raise FolderFormatError(f"a snapshot record is [{FORMAT_VERSION}, 8 fields]")
        _, number, time_ns, manifest, previous, files, dirs, symlinks, size = value
        if not all(type(v) is int for v in (number, time_ns, files, dirs, symlinks, size)):
            raise FolderFormatError("a snapshot record's counts are integers")
        return cls(number=number, time_ns=time_ns, manifest=_parse_link(manifest, "manifest link"),
                   previous=None if previous is None else _parse_link(previous, "previous snapshot link"),
                   files=files, dirs=dirs, symlinks=symlinks, size=size)

    @classmethod
    def of(cls, entries: tuple[Entry, ...] | list[Entry], *, manifest: Link, previous: Snapshot | None,
           previous_link: Link | None, time_ns: int) -> Snapshot:
        """The snapshot of ``entries``, after ``previous`` (stored under ``previous_link``)."""
        files = [e for e in entries if e.kind is EntryKind.FILE]
        return cls(number=1 if previous is None else previous.number + 1, time_ns=time_ns, manifest=manifest,
                   previous=previous_link, files=len(files),
                   dirs=sum(e.kind is EntryKind.DIR for e in entries),
                   symlinks=sum(e.kind is EntryKind.SYMLINK for e in entries), size=sum(e.size for e in files))


def _record_pad(read_key: bytes, root: bytes) -> bytes:
    return hmac.new(read_key, b"mu:folder-record:v1" + root, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def encode_record_value(read_key: bytes, snapshot: Link, *, public_key: bytes | None = None,
                        chunk_list: Link | None = None) -> bytes:
    """The mutable record's value (§7 Record value).

    Version 1, ``1 || root || key XOR pad``: the pad is HMAC-SHA256(read_key,
    label || root), so only a read-cap holder learns the snapshot's key; a
    host sees a root it can walk and keep.  With ``chunk_list`` (and the
    folder's ``public_key``), version 2 appends ``list root || list key XOR
    list pad``, the pad derived from the public key, so a verify-cap holder
    can read the list of every chunk the snapshot needs (§7.1 Chunk list).
    """
    assert snapshot.key is not None
    sealed = snapshot.root + _xor(snapshot.key, _record_pad(read_key, snapshot.root))
    if chunk_list is None:
        return bytes([FORMAT_VERSION]) + sealed
    assert chunk_list.key is not None and public_key is not None
    return (bytes([LISTED_VALUE_VERSION]) + sealed + chunk_list.root
            + _xor(chunk_list.key, chunk_list_pad(public_key, chunk_list.root)))


def record_root(value: bytes) -> bytes:
    """The snapshot root a record value names (what a verify-cap holder walks)."""
    if not ((len(value) == RECORD_VALUE_SIZE and value[0] == FORMAT_VERSION)
            or (len(value) == LISTED_VALUE_SIZE and value[0] == LISTED_VALUE_VERSION)):
        raise FolderFormatError(f"a folder record value is {RECORD_VALUE_SIZE} bytes of version {FORMAT_VERSION} "
                                f"or {LISTED_VALUE_SIZE} of version {LISTED_VALUE_VERSION}")
    return value[1:1 + ADDRESS_SIZE]


def record_chunk_list(public_key: bytes, value: bytes) -> Link | None:
    """The chunk list link a record value names (version 2), or None (version 1, no list)."""
    record_root(value)
    if value[0] == FORMAT_VERSION:
        return None
    root = value[RECORD_VALUE_SIZE:RECORD_VALUE_SIZE + ADDRESS_SIZE]
    return Link(root, _xor(value[RECORD_VALUE_SIZE + ADDRESS_SIZE:], chunk_list_pad(public_key, root)))


def decode_record_value(read_key: bytes, value: bytes) -> Link:
    """The snapshot link a record value names, for a read-cap holder."""
    root = record_root(value)
    return Link(root, _xor(value[1 + ADDRESS_SIZE:RECORD_VALUE_SIZE], _record_pad(read_key, root)))
