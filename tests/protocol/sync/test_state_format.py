"""The state's canonical msgpack encoding (specs/sync.md §State format): round trips and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.sync import (
    EntryKind,
    FileEntry,
    FolderState,
    SyncError,
    VersionVector,
    check_path,
    conflict_name,
)

A, B = bytes([1]) * 32, bytes([2]) * 32

devices = st.sampled_from((A, B))
vectors = st.dictionaries(devices, st.integers(1, 2**64 - 1), min_size=1).map(VersionVector.of)
names = st.text(st.characters(codec="utf-8", exclude_characters="/\\\0"), min_size=1, max_size=8).filter(
    lambda part: part not in (".", ".."))
paths = st.lists(names, min_size=1, max_size=3).map("/".join)


@st.composite
def entries(draw: st.DrawFn) -> FileEntry:
    vector = draw(vectors)
    device = draw(st.sampled_from([d for d, _ in vector.counters]))
    kind = draw(st.sampled_from(EntryKind))
    live = kind is not EntryKind.DELETED
    content = draw(st.binary(max_size=40)) if kind in (EntryKind.FILE, EntryKind.SYMLINK) else b""
    return FileEntry(vector=vector, kind=kind, content=content, size=draw(st.integers(0, 2**64 - 1)) if live else 0,
                     mtime_ns=draw(st.integers(0, 2**63 - 1)), mode=draw(st.integers(0, 0o7777)) if live else 0,
                     device=device)


states = st.builds(FolderState.of, devices, st.dictionaries(paths, entries(), max_size=6))


@settings(max_examples=200)
@given(states)
def test_a_state_round_trips_through_its_one_encoding(state: FolderState) -> None:
    data = state.serialize()
    assert FolderState.parse(data) == state
    assert FolderState.parse(data).serialize() == data


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_is_refused_with_a_sync_error(data: bytes) -> None:
    try:
        FolderState.parse(data)
    except SyncError:
        pass


def _row(path: str = "x", vector: object = None, kind: object = "file", content: object = b"r", size: object = 1,
         mtime: object = 5, mode: object = 0o644, device: object = A) -> list[object]:
    return [path, [[A, 1]] if vector is None else vector, kind, content, size, mtime, mode, device]


def _pack(*rows: list[object], device: object = A, version: object = 1) -> bytes:
    data = msgpack.packb([version, device, list(rows)], use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def test_the_encoding_is_what_the_spec_says() -> None:
    state = FolderState.parse(_pack(_row()))
    assert state.get("x") == FileEntry(vector=VersionVector.of({A: 1}), kind=EntryKind.FILE, content=b"r", size=1,
                                       mtime_ns=5, mode=0o644, device=A)


@pytest.mark.parametrize(("data", "reason"), [
    (_pack(_row()) + b"\x00", "extra data"),
    (_pack(_row("b"), _row("a")), "canonical"),
    (_pack(_row("a"), _row("a")), "canonical"),
    (_pack(_row(), version=2), "version"),
    (_pack(_row(kind="fifo")), "kind"),
    (_pack(_row(vector=[[B, 1], [A, 1]])), "sorted"),
    (_pack(_row(vector=[[A, 0]])), "counters"),
    (_pack(_row(vector=[[A, -1]])), "counters"),
    (_pack(_row(vector=[[B, 1]])), "device that made it"),
    (_pack(_row(vector=[["a", 1]])), "pairs"),
    (_pack(_row(kind="deleted")), "no content"),
    (_pack(_row(kind="deleted", content=b"")), "size 0"),
    (_pack(_row(path="../x")), "normalised"),
    (_pack(_row(path="a//b")), "normalised"),
    (_pack(_row(mode=0o10000)), "mode"),
    (_pack(_row(size=-1)), "size"),
    (_pack(_row(), device=b"short"), "device id"),
    (_pack(_row(content=b"x" * 1025)), "msgpack"),
    (msgpack.packb({"v": 1}), "msgpack"),
])
def test_bad_states_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(SyncError, match=reason):
        FolderState.parse(data)


def test_non_canonical_integers_are_refused() -> None:
    # A size of 1 written as a uint64 (0xcf ...) instead of a positive fixint.
    data = _pack(_row(size=1))
    wide = data.replace(b"\x01\x05", b"\xcf" + (1).to_bytes(8, "big") + b"\x05", 1)
    assert wide != data
    with pytest.raises(SyncError, match="canonical"):
        FolderState.parse(wide)


@pytest.mark.parametrize("path", ["", "/abs", "a/", "a/./b", "a\\b", "nul\0", "x" * 4097])
def test_bad_paths(path: str) -> None:
    with pytest.raises(SyncError):
        check_path(path)


def test_the_shared_vector() -> None:
    vector = json.loads((Path(__file__).resolve().parents[2] / "vectors" / "sync.json").read_text())
    entries = {
        row["path"]: FileEntry(
            vector=VersionVector.of({bytes.fromhex(d): c for d, c in row["vector"]}), kind=EntryKind(row["kind"]),
            content=bytes.fromhex(row["content"]), size=row["size"], mtime_ns=row["mtime_ns"], mode=row["mode"],
            device=bytes.fromhex(row["device"]))
        for row in vector["state"]["entries"]
    }
    state = FolderState.of(bytes.fromhex(vector["state"]["device"]), entries)
    assert state.serialize().hex() == vector["state"]["encoded"]
    assert FolderState.parse(bytes.fromhex(vector["state"]["encoded"])) == state
    name = vector["conflict_name"]
    assert conflict_name(name["path"], name["mtime_ns"], bytes.fromhex(name["device"])) == name["name"]
