"""``mu store ls|verify|gc``: look after the local chunk store (specs/chunks.md §8).

``ls`` shows each chunk's size, pin and paid-until time; ``verify`` reads
every chunk file and checks it against its address (exit 3 if any is
corrupt); ``gc`` deletes unpinned chunks whose paid retention ran out (the
pass a running node makes every ``--gc-period``), removes leftovers of
crashed writes and corrupt chunks, and rebuilds the index from the files.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone

from node.cli.arguments import non_negative_int
from node.cli.exit_codes import EXIT_INTEGRITY, EXIT_OK, fail
from node.runtime.config import resolve_data_dir
from node.store.retention import collect_once
from node.store import STORE_DIR, ChunkCorrupt, ChunkNotFound, ChunkStore, StoreError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("store", help="list, verify and clean the local chunk store")
    cmds = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    ls = cmds.add_parser("ls", help="list stored chunks (address, size, pinned, paid-until)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_ls)
    verify = cmds.add_parser("verify", help="check every chunk against its address")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=run_verify)
    gc = cmds.add_parser("gc", help="delete expired paid chunks, crash leftovers and corrupt chunks; rebuild the index")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    gc.add_argument("--now", type=non_negative_int, default=None, help="unix time to judge retention by (default: now)")
    gc.set_defaults(func=run_gc)


def _open(args: argparse.Namespace) -> ChunkStore:
    return ChunkStore(resolve_data_dir(args.data_dir) / STORE_DIR)


def run_ls(args: argparse.Namespace) -> int:
    try:
        with _open(args) as store:
            rows = list(store.entries_meta())
            used = store.used_bytes
            roots = store.pinned_roots()
    except (StoreError, OSError) as exc:
        return fail(f"cannot read the store: {exc}")
    if args.json:
        print(json.dumps({"count": len(rows), "bytes": used, "pinned_roots": [r.hex() for r in roots],
                          "chunks": [{"address": m.address.hex(), "size": m.size, "pinned": m.pinned,
                                      "paid_until": m.paid_until} for m in rows]}))
    else:
        for m in rows:
            print(f"{m.address.hex()}  {m.size:>8}  {'pinned' if m.pinned else '      '}  {_when(m.paid_until)}")
        pinned = sum(1 for m in rows if m.pinned)
        print(f"{len(rows)} chunks, {used} bytes; {pinned} pinned chunks, {len(roots)} pinned roots")
    return EXIT_OK


def _when(paid_until: int | None) -> str:
    if paid_until is None:
        return "-"
    stamp = datetime.fromtimestamp(paid_until, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"paid until {stamp}"


def _corrupt_chunks(store: ChunkStore) -> tuple[int, list[bytes]]:
    """Read every chunk file on disk (the truth, not the index); return (count, corrupt)."""
    on_disk = store.scan_files()
    corrupt: list[bytes] = []
    for address in sorted(on_disk):
        try:
            store.get(address)
        except ChunkCorrupt:
            corrupt.append(address)
        except ChunkNotFound:
            continue  # deleted while we were scanning
    return len(on_disk), corrupt


def run_verify(args: argparse.Namespace) -> int:
    try:
        with _open(args) as store:
            count, corrupt = _corrupt_chunks(store)
    except (StoreError, OSError) as exc:
        return fail(f"cannot read the store: {exc}")
    if args.json:
        print(json.dumps({"checked": count, "corrupt": [a.hex() for a in corrupt]}))
    else:
        for address in corrupt:
            print(f"corrupt: {address.hex()}")
        print(f"{count} chunks checked, {len(corrupt)} corrupt")
    return EXIT_INTEGRITY if corrupt else EXIT_OK


def run_gc(args: argparse.Namespace) -> int:
    try:
        with _open(args) as store:
            now = int(time.time()) if args.now is None else args.now
            expired = collect_once(store, now)
            _count, corrupt = _corrupt_chunks(store)
            for address in corrupt:
                store.delete(address)
            report = store.rebuild_index()
    except (StoreError, OSError) as exc:
        return fail(f"gc failed: {exc}")
    summary = {
        "chunks": report.chunks,
        "bytes": report.bytes,
        "expired_removed": [a.hex() for a in expired.removed],
        "expired_bytes": expired.bytes_freed,
        "corrupt_removed": [a.hex() for a in corrupt],
        "index_rows_added": report.added,
        "index_rows_removed": report.removed,
        "temp_files_removed": report.temp_files_removed,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{report.chunks} chunks ({report.bytes} bytes) kept; removed {len(expired.removed)} expired chunks "
            f"({expired.bytes_freed} bytes), {len(corrupt)} corrupt chunks and "
            f"{report.temp_files_removed} temp files; index +{report.added} -{report.removed} rows"
        )
    return EXIT_OK
