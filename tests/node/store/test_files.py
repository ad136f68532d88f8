"""node.files.local: add_file / get_file through a real ChunkStore on disk (specs/chunks.md §6, §8.4)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

import node.files.local as files_module
from node.files.local import add_file, get_file, load_convergence_secret
from node.store import ChunkNotFound, ChunkStore
from protocol.chunks import FileDecoder, IntegrityError, Link, max_fanout

CS = 64 * 1024


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_add_get_with_progress_and_metadata(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    data = write_random(tmp_path / "notes.txt", 5 * CS + 3)
    seen: list[int] = []
    result = add_file(store, tmp_path / "notes.txt", chunk_size=CS, progress=seen.append)
    assert sum(seen) == len(data) and result.size == len(data)
    assert (result.chunks, result.new_chunks) == (7, 7)
    assert (result.name, result.media_type) == ("notes.txt", "text/plain")
    got: list[int] = []
    out = get_file(store, result.link, tmp_path / "copy", progress=got.append)
    assert (tmp_path / "copy").read_bytes() == data and sum(got) == len(data)
    assert (out.name, out.size, out.chunks) == ("notes.txt", len(data), 7)


def test_convergent_add_is_deterministic_and_dedupes(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    write_random(tmp_path / "f", 3 * CS)
    secret = load_convergence_secret(tmp_path)
    assert load_convergence_secret(tmp_path) == secret
    first = add_file(store, tmp_path / "f", chunk_size=CS, convergence_secret=secret)
    second = add_file(store, tmp_path / "f", chunk_size=CS, convergence_secret=secret)
    assert first.link == second.link and second.new_chunks == 0
    other = add_file(store, tmp_path / "f", chunk_size=CS, convergence_secret=os.urandom(32))
    assert other.link.root != first.link.root


def test_failed_get_leaves_nothing_at_the_target(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    write_random(tmp_path / "f", 4 * CS)
    result = add_file(store, tmp_path / "f", chunk_size=CS)
    target = tmp_path / "out" / "file.bin"
    target.parent.mkdir()
    with pytest.raises(IntegrityError):
        get_file(store, Link(result.link.root, os.urandom(32)), target)
    victim = [a for a in store if a != result.link.root][2]
    store.delete(victim)
    with pytest.raises(ChunkNotFound):
        get_file(store, result.link, target)
    assert list(target.parent.iterdir()) == []


@pytest.mark.slow
def test_default_fanout_two_level_manifest_through_disk(tmp_path: Path) -> None:
    # One more data chunk than a root can list forces an index level with the
    # format's own fanout (no test-only parameters).
    blocks = max_fanout(CS) + 1
    src = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        for i in range(blocks):
            block = os.urandom(CS if i < blocks - 1 else 1)
            digest.update(block)
            f.write(block)
    store = ChunkStore(tmp_path / "chunks")
    result = add_file(store, src, chunk_size=CS)
    assert result.chunks == blocks + 3  # data, two level-1 index nodes (F and 1 children), the root
    src.unlink()
    decoder = FileDecoder.from_link(result.link)
    decoder.feed(store.get(result.link.root))
    assert decoder.manifest is not None and decoder.manifest.depth == 1
    get_file(store, result.link, tmp_path / "copy.bin")
    copy = hashlib.sha256()
    with open(tmp_path / "copy.bin", "rb") as f:
        while block := f.read(1 << 20):
            copy.update(block)
    assert copy.digest() == digest.digest()


def _partial_fd(fd: int) -> bool:
    try:
        return ".mu-partial-" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name a file descriptor")
def test_get_syncs_the_partial_file_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_module, "GET_SYNC_BYTES", CS)
    store = ChunkStore(tmp_path / "chunks")
    data = write_random(tmp_path / "f", 6 * CS + 1)
    result = add_file(store, tmp_path / "f", chunk_size=CS)
    synced: list[int] = []
    real_sync = os.fdatasync

    def spy(fd: int) -> None:
        if _partial_fd(fd):
            synced.append(os.fstat(fd).st_size)
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    get_file(store, result.link, tmp_path / "copy")
    assert synced and all(size >= CS for size in synced)  # a sync per GET_SYNC_BYTES, one at a time
    assert (tmp_path / "copy").read_bytes() == data


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name a file descriptor")
def test_failed_background_sync_fails_the_get_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files_module, "GET_SYNC_BYTES", CS)
    store = ChunkStore(tmp_path / "chunks")
    write_random(tmp_path / "f", 6 * CS)
    result = add_file(store, tmp_path / "f", chunk_size=CS)
    real_sync = os.fdatasync

    def failing(fd: int) -> None:
        if _partial_fd(fd):
            raise OSError(errno.EIO, "simulated device error")
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", failing)
    target = tmp_path / "out" / "copy"
    target.parent.mkdir()
    with pytest.raises(OSError, match="simulated device error"):
        get_file(store, result.link, target)
    assert list(target.parent.iterdir()) == []


def test_get_reports_the_first_bad_data_chunk_in_file_order(tmp_path: Path) -> None:
    # Data chunks are opened OPEN_DEPTH at a time on several threads; the
    # error is still the one a sequential read would meet first.
    store = ChunkStore(tmp_path / "chunks")
    write_random(tmp_path / "f", 8 * CS)
    result = add_file(store, tmp_path / "f", chunk_size=CS)
    decoder = FileDecoder.from_link(result.link)
    decoder.feed(store.get(result.link.root))
    slots = decoder.data_slots(8)
    for victim in (slots[5], slots[2]):
        path = store.path_of(victim.address)
        flipped = bytearray(path.read_bytes())
        flipped[-1] ^= 1
        path.write_bytes(bytes(flipped))
    target = tmp_path / "copy"
    with pytest.raises(IntegrityError) as err:
        get_file(store, result.link, target)
    assert err.value.address == slots[2].address
    assert not target.exists() and not list(tmp_path.glob(".copy.mu-partial-*"))


def test_malloc_tuning_applies_once_on_glibc() -> None:
    import platform

    from node.files._malloc import keep_chunk_buffers

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_chunk_buffers() is expected
    assert keep_chunk_buffers() is expected  # idempotent
