"""10,000 small files, then one changed: the second snapshot reads that file only (issue 16, "Must hold").

Counted twice: the snapshot's own ``files_read`` and, independently, every
``open`` of a file under the tree during the second snapshot (an audit
hook, which no code path can go around).  The chunks new to the store are
that file's and the changed manifest's and snapshot record's only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from node.folders.index import FolderIndex, Head
from node.folders.local import snapshot_folder
from node.store import ChunkStore
from protocol.folders import WriteCap, encode_record_value

FILES = 10_000
OLD = 1_600_000_000 * 10**9
CAP = WriteCap(bytes(range(32)))


@pytest.mark.slow
def test_one_changed_file_among_ten_thousand_is_the_only_one_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(100):
        (src / f"d{d:02}").mkdir(parents=True)
        for f in range(FILES // 100):
            path = src / f"d{d:02}" / f"f{f:03}.txt"
            path.write_bytes(b"small file %d %d\n" % (d, f) * 20)
            os.utime(path, ns=(OLD, OLD))
    opened: list[str] = []
    prefix = str(src)

    def audit(event: str, args: tuple[object, ...]) -> None:
        if event == "os.open" or event == "open":
            path = args[0]
            if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(prefix):
                opened.append(os.fspath(path))

    sys.addaudithook(audit)  # stays for the process; it only appends paths under this test's tmp dir
    with ChunkStore(tmp_path / "store") as store, FolderIndex(tmp_path / "folders.sqlite3") as index:
        start = time.monotonic()
        first, _ = snapshot_folder(store, index, src, CAP, None, now_ns=time.time_ns(), tmp_dir=tmp_path / "tmp")
        full = time.monotonic() - start
        assert first.files_read == FILES and len(opened) == FILES
        head = Head(1, encode_record_value(CAP.read_key, first.link))
        changed = src / "d42" / "f017.txt"
        changed.write_bytes(b"edited")
        os.utime(changed, ns=(OLD + 1, OLD + 1))
        opened.clear()
        start = time.monotonic()
        second, changes = snapshot_folder(store, index, src, CAP, head, now_ns=time.time_ns(), tmp_dir=tmp_path / "tmp")
        rescan = time.monotonic() - start
    assert opened == [str(changed)]
    assert second.files_read == 1 and changes.changed == (b"d42/f017.txt",)
    # The file's data and root chunks; the manifest's chunks around the changed entry and its root;
    # the snapshot record's data and root chunks.
    assert second.new_chunks <= 2 + 3 + 2
    print(f"\nfirst snapshot {full:.2f} s, second {rescan:.2f} s, new chunks {second.new_chunks}")
