"""node.files.local with content-defined chunks (format 3): add_file / get_file on a real store (specs/chunks.md §6.6)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from node.files.local import add_file, get_file
from node.store import ChunkStore
from protocol.chunks import FORMAT_V3, LocalChunkError

SECRET = bytes(range(32))
MiB = 1024 * 1024


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_default_add_cuts_with_cdc_and_gets_back(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    data = random.Random(1).randbytes(9 * MiB + 17)
    seen: list[int] = []
    result = add_file(store, _write(tmp_path / "a.bin", data), progress=seen.append)
    assert sum(seen) == len(data) and result.size == len(data) and result.chunks == result.new_chunks
    assert store.get(result.link.root)[0] == FORMAT_V3
    out = get_file(store, result.link, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == data and out.size == len(data) and out.name == "a.bin"
    again = add_file(store, tmp_path / "a.bin")
    assert again.link != result.link and again.new_chunks == again.chunks  # random keys: nothing shared


def test_chunk_secret_dedupes_edited_copies_and_equal_files(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    data = random.Random(2).randbytes(24 * MiB)
    first = add_file(store, _write(tmp_path / "v1", data), chunk_secret=SECRET, name="f")
    same = add_file(store, _write(tmp_path / "copy", data), chunk_secret=SECRET, name="f")
    assert same.link == first.link and same.new_chunks == 0
    edited = data[:12 * MiB] + b"inserted" * 12 + data[12 * MiB:]
    second = add_file(store, _write(tmp_path / "v2", edited), chunk_secret=SECRET, name="f")
    # At most 3 data chunks around the edit, plus the new root.
    assert 1 <= second.new_chunks <= 4
    get_file(store, second.link, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == edited


def test_convergent_add_without_chunk_size_is_convergent_per_chunk(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    data = random.Random(3).randbytes(5 * MiB)
    one = add_file(store, _write(tmp_path / "x", data), convergence_secret=b"u" * 32)
    two = add_file(store, tmp_path / "x", convergence_secret=b"u" * 32)
    assert one.link == two.link and two.new_chunks == 0


def test_chunk_secret_with_a_fixed_chunk_size_is_refused(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    with pytest.raises(LocalChunkError):
        add_file(store, _write(tmp_path / "x", b"abc"), chunk_secret=SECRET, chunk_size=64 * 1024)
