"""Trees for the folder tests: build one with every kind of entry, and hash one to compare it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def make_tree(root: Path, *, seed: int = 0) -> None:
    """Files (with odd modes and old mtimes), a nested empty dir, a read-only dir, symlinks (one dangling)."""
    (root / "docs" / "deep" / "empty").mkdir(parents=True)
    (root / "docs" / "report secret-name.txt").write_bytes(b"plaintext sample %d " % seed * 300)
    (root / "docs" / "deep" / "data.bin").write_bytes(hashlib.sha256(b"%d" % seed).digest() * 5000)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o750)
    (root / "empty-file").write_bytes(b"")
    os.symlink("docs/report secret-name.txt", root / "link-to-report")
    os.symlink("nowhere/at/all", root / "dangling")
    (root / "locked").mkdir()
    (root / "locked" / "inside").write_bytes(b"in a read-only dir")
    for i, path in enumerate(sorted(root.rglob("*"))):
        os.utime(path, ns=(1_600_000_000_000_000_000 + i * 1_000_003, 1_600_000_000_000_000_000 + i * 1_000_003),
                 follow_symlinks=False)
    os.chmod(root / "locked", 0o555)


def tree_hash(root: Path) -> str:
    """SHA-256 over every path's kind, mode, mtime_ns and contents or target (the root itself excluded)."""
    h = hashlib.sha256()
    for directory, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(directory) / name
            st = os.lstat(path)
            rel = os.fsencode(path.relative_to(root))
            h.update(b"%s\0%o\0%d\0" % (rel, st.st_mode, st.st_mtime_ns))
            if stat.S_ISLNK(st.st_mode):
                h.update(os.fsencode(os.readlink(path)))
            elif stat.S_ISREG(st.st_mode):
                h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()
