"""ChunkStore.may_have answers from memory (specs/network.md §5 Writing the file, resuming; issue 22)."""

from __future__ import annotations

import os
from pathlib import Path

from node.store import ChunkStore


def test_may_have_follows_puts_deletes_reopens_and_rebuilds(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "chunks")
    data = os.urandom(1000)
    first, second = b"\x07" * 8 + os.urandom(24), b"\x07" * 8 + os.urandom(24)  # one 8-byte prefix
    assert not store.may_have(first)
    store.put(first, data, verify=False)
    store.put(second, data, verify=False)
    assert store.may_have(first) and store.may_have(second) and not store.may_have(os.urandom(32))
    store.delete(first)
    assert store.may_have(second)  # the shared prefix stays while a chunk holds it
    store.close()
    reopened = ChunkStore(tmp_path / "chunks")
    assert reopened.may_have(second)
    reopened.path_of(second).unlink()  # removed by hand: the files are the truth after a rebuild
    reopened.rebuild_index()
    assert not reopened.may_have(second)
    reopened.close()
