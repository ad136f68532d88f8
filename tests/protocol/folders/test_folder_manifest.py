"""Folder manifest, snapshot record and record value: canonical round trips and refusals (specs/folders.md §5-§7)."""

from __future__ import annotations

import msgpack
import pytest

from protocol.chunks import Link
from protocol.folders import (
    Entry,
    EntryKind,
    FolderFormatError,
    Snapshot,
    decode_manifest,
    decode_record_value,
    encode_manifest,
    encode_record_value,
    record_root,
)

LINK = Link(bytes(range(32)), bytes(range(32, 64)))


def tree() -> list[Entry]:
    return [
        Entry(path=b"b.txt", kind=EntryKind.FILE, mode=0o644, mtime_ns=1_700_000_000_123_456_789, size=5, link=LINK),
        Entry(path=b"a", kind=EntryKind.DIR, mode=0o755, mtime_ns=-5),
        Entry(path=b"a/empty", kind=EntryKind.DIR, mode=0o700, mtime_ns=7),
        Entry(path=b"a/ln", kind=EntryKind.SYMLINK, mode=0o777, mtime_ns=8, size=6, target=b"../b.t"),
        Entry(path=b"a/\xff name", kind=EntryKind.FILE, mode=0o4755, mtime_ns=9, size=0, link=LINK),
    ]


def test_manifest_round_trips_sorted_and_canonical() -> None:
    data = encode_manifest(tree())
    entries = decode_manifest(data)
    assert [e.path for e in entries] == sorted(e.path for e in tree())
    assert set(entries) == set(tree())
    assert encode_manifest(list(reversed(tree()))) == data


def test_manifest_holds_no_cleartext_it_was_not_given() -> None:
    # The manifest is plaintext to be encrypted: this checks the encoding is what specs/folders.md §5 says.
    assert msgpack.unpackb(encode_manifest(tree()[:1])) == [1, [[b"b.txt", 0, 0o644, 1_700_000_000_123_456_789, 5,
                                                               LINK.root + LINK.key]]]


@pytest.mark.parametrize("path", [b"", b"/abs", b"a/../b", b"a//b", b"./a", b"a/", b"a\0b", b"x" * 4097])
def test_bad_paths_are_refused(path: bytes) -> None:
    with pytest.raises(FolderFormatError):
        Entry(path=path, kind=EntryKind.DIR, mode=0o755, mtime_ns=0)


def test_entries_must_fit_their_kind() -> None:
    with pytest.raises(FolderFormatError):
        Entry(path=b"f", kind=EntryKind.FILE, mode=0o644, mtime_ns=0)  # no link
    with pytest.raises(FolderFormatError):
        Entry(path=b"l", kind=EntryKind.SYMLINK, mode=0o777, mtime_ns=0, size=3, target=b"ab")
    with pytest.raises(FolderFormatError):
        Entry(path=b"d", kind=EntryKind.DIR, mode=0o755, mtime_ns=0, link=LINK)
    with pytest.raises(FolderFormatError):
        Entry(path=b"d", kind=EntryKind.DIR, mode=0o17777, mtime_ns=0)


def test_an_entry_needs_its_directory() -> None:
    with pytest.raises(FolderFormatError, match="directory"):
        encode_manifest([Entry(path=b"a/b", kind=EntryKind.DIR, mode=0o755, mtime_ns=0)])


def _rows(data: bytes) -> list[object]:
    return msgpack.unpackb(data)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mutate, reason", [
    (lambda v: [2, v[1]], "manifest is"),
    (lambda v: [1, list(reversed(v[1]))], "sorted"),
    (lambda v: [1, v[1] + [v[1][-1]]], "sorted"),
    (lambda v: [1, [[*v[1][0][:1], 9, *v[1][0][2:]]] + v[1][1:]], "kind"),
    (lambda v: [1, [[*v[1][0][:5], b"short"]] + v[1][1:]], "no reference"),
    (lambda v: [1, v[1][:-1] + [[*v[1][-1][:5], b"short"]]], "root and key"),
    (lambda v: [1, [v[1][0][:5]] + v[1][1:]], "6 fields"),
])
def test_malformed_manifests_are_refused(mutate: object, reason: str) -> None:
    rows = _rows(encode_manifest(tree()))
    bad = msgpack.packb(mutate(rows), use_bin_type=True)  # type: ignore[operator]
    with pytest.raises(FolderFormatError, match=reason):
        decode_manifest(bad)


def test_non_canonical_and_trailing_bytes_are_refused() -> None:
    data = encode_manifest(tree())
    with pytest.raises(FolderFormatError, match="trailing"):
        decode_manifest(data + b"\x00")
    # 1 as a uint16 instead of a positive fixint: same value, another encoding.
    with pytest.raises(FolderFormatError, match="canonical"):
        decode_manifest(b"\x92\xcd\x00\x01" + data[2:])


def test_snapshot_round_trips_and_counts() -> None:
    first = Snapshot.of(tree(), manifest=LINK, previous=None, previous_link=None, time_ns=10)
    assert (first.number, first.files, first.dirs, first.symlinks, first.size) == (1, 2, 2, 1, 5)
    second = Snapshot.of(tree(), manifest=LINK, previous=first, previous_link=LINK, time_ns=11)
    assert second.number == 2 and second.previous == LINK
    for snap in (first, second):
        assert Snapshot.decode(snap.encode()) == snap
    with pytest.raises(FolderFormatError):
        Snapshot.decode(first.encode() + b"\x00")
    with pytest.raises(FolderFormatError, match="predecessor"):
        Snapshot(number=2, time_ns=0, manifest=LINK, previous=None, files=0, dirs=0, symlinks=0, size=0)


def test_record_value_hides_the_key_from_all_but_the_read_key() -> None:
    read_key = bytes(range(100, 132))
    value = encode_record_value(read_key, LINK)
    assert len(value) == 65 and record_root(value) == LINK.root and LINK.key not in value  # type: ignore[operator]
    assert decode_record_value(read_key, value) == LINK
    assert decode_record_value(bytes(32), value).key != LINK.key
    with pytest.raises(FolderFormatError):
        record_root(b"\x02" + value[1:])
    with pytest.raises(FolderFormatError):
        record_root(value[:-1])
