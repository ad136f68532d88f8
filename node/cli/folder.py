"""``mu folder``: encrypted folder snapshots with history (specs/folders.md).

``create`` makes a new folder's links; ``pin`` asks the running node to
fetch and keep a folder's ciphertext with its verify link (specs/folders.md
§7.1); ``snapshot``, ``log``, ``restore``, ``diff`` and ``prune`` go through the data dir's backend (node/cli/backend.py): with
a node running, through the network (the snapshot is uploaded, paid, and
published in the folder's signed DHT record; a restore fetches what the
store lacks), without one, the local store.

A link given as ``-`` is read from stdin, so it need not sit in the shell
history or the process list.  Links are printed only by ``create``.

Exit codes: 0 ok, 1 operational error, 2 not found (no such snapshot, a
chunk nowhere to be found), 3 integrity failure, 4 usage error (a bad
link, a bad time), 5 some chunk of the snapshot reached fewer hosts than
asked (the record is published all the same).
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import Any

from node.cli.arguments import positive_int, unix_time_ns
from node.api.errors import ControlError
from node.cli.backend import answering_node, open_backend
from node.cli.exit_codes import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_OK, EXIT_UNDER_REPLICATED, EXIT_USAGE, fail
from node.cli.progress import progress_display
from node.cli.remote_backend import EXIT_FOR_ERROR_CODE
from node.cli.results import BackendError, to_json
from node.folders.index import FolderIndex
from node.runtime.config import resolve_data_dir
from protocol.folders import CapError, ReadCap, WriteCap, parse_cap, parse_read_cap, parse_write_cap
from protocol.identity import SEED_SIZE


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("folder", help="encrypted folder snapshots with history: create, snapshot, log, restore, diff, "
                                           "prune, pin")
    commands = p.add_subparsers(dest="folder_command", metavar="COMMAND", required=True)

    c = commands.add_parser("create", help="make a new folder; print its write, read and verify links")
    c.add_argument("directory", nargs="?", type=Path, default=None,
                   help="remember the write link for this directory (then `snapshot DIR` needs no --link)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_create)

    s = commands.add_parser("snapshot", help="snapshot a directory (through a running node: upload and publish)")
    s.add_argument("directory", type=Path, help="the directory to snapshot")
    s.add_argument("--link", default=None,
                   help="the folder's write link (default: the one remembered for DIR; - reads it from stdin)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    s.set_defaults(func=run_snapshot)

    lg = commands.add_parser("log", help="list a folder's kept snapshots, newest first, and how many were pruned")
    lg.add_argument("link", help="read or write link (- reads it from stdin)")
    lg.add_argument("--json", action="store_true", help="machine-readable output")
    lg.set_defaults(func=run_log)

    r = commands.add_parser("restore", help="write a snapshot's tree into a directory, each file atomically")
    r.add_argument("link", help="read or write link (- reads it from stdin)")
    r.add_argument("directory", type=Path, help="where to write the tree (created if missing)")
    which = r.add_mutually_exclusive_group()
    which.add_argument("--snapshot", type=positive_int, default=None, metavar="N",
                       help="snapshot number N (default: the newest)")
    which.add_argument("--at", type=unix_time_ns, default=None, metavar="TIME",
                       help="the newest snapshot taken at or before TIME "
                            "(ISO 8601, UTC unless it says, or Unix seconds; default: the newest snapshot)")
    r.add_argument("--path", default=None, metavar="SUB",
                   help="restore only this path of the folder and what is under it (default: the whole folder)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    r.set_defaults(func=run_restore)

    pr = commands.add_parser("prune", help="apply the retention policy: release what only pruned snapshots need")
    pr.add_argument("link", help="write link (- reads it from stdin)")
    pr.add_argument("--dry-run", action="store_true", help="say what would be pruned and released; change nothing")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=run_prune)

    pn = commands.add_parser("pin", help="fetch (paid) and keep a folder's ciphertext with its verify link, through "
                                         "the running node; run again to pick up new snapshots")
    pn.add_argument("link", nargs="?", default=None, help="verify (or read or write) link (- reads it from stdin)")
    pn.add_argument("--list", action="store_true", help="list the folders this node pins instead")
    pn.add_argument("--json", action="store_true", help="machine-readable output")
    pn.set_defaults(func=run_pin)

    d = commands.add_parser("diff", help="paths added, removed and changed between two snapshots")
    d.add_argument("link", help="read or write link (- reads it from stdin)")
    d.add_argument("a", nargs="?", type=int, default=None, help="older snapshot number (default: the one before B)")
    d.add_argument("b", nargs="?", type=positive_int, default=None, help="newer snapshot number (default: the newest)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=run_diff)


def _when(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 10**9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _link_text(text: str) -> str:
    return sys.stdin.readline() if text == "-" else text


def _clean_failures(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Every subcommand alike: a bad link is a usage error, a backend's error exits with its own code."""
    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except CapError as exc:
            return fail(f"bad folder link: {exc}", EXIT_USAGE)
        except BackendError as exc:
            return fail(exc.message, exc.exit_code)
    return wrapped


def _index(data_dir_option: str | None) -> FolderIndex:
    data_dir = resolve_data_dir(data_dir_option)
    data_dir.mkdir(parents=True, exist_ok=True)
    return FolderIndex.open(data_dir)


def run_create(args: argparse.Namespace) -> int:
    cap = WriteCap(secrets.token_bytes(SEED_SIZE))
    if args.directory is not None:
        if not args.directory.is_dir():
            return fail(f"not a directory: {args.directory}", EXIT_NOT_FOUND)
        with _index(args.data_dir) as index:
            index.remember(os.fsencode(args.directory.resolve()), cap.seed)
    links = {"write": cap.to_string(), "read": cap.read_cap.to_string(), "verify": cap.verify_cap.to_string()}
    if args.json:
        print(to_json(links))
    else:
        for kind, text in links.items():
            print(f"{kind:<6} {text}")
    return EXIT_OK


@_clean_failures
def run_snapshot(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        return fail(f"not a directory: {directory}", EXIT_NOT_FOUND)
    key = os.fsencode(directory.resolve())
    if args.link is not None:
        cap = parse_write_cap(_link_text(args.link))
    else:
        with _index(args.data_dir) as index:
            seed = index.remembered(key)
        if seed is None:
            return fail(f"no folder is remembered for {directory}: run `mu folder create {directory}` "
                        "or pass --link WRITE_LINK", EXIT_USAGE)
        cap = WriteCap(seed)
    with progress_display(quiet=args.quiet) as on_progress:
        report = open_backend(args.data_dir).folder_snapshot(directory, cap, on_progress=on_progress)
    if args.link is not None:
        with _index(args.data_dir) as index:
            index.remember(key, cap.seed)
    if args.json:
        print(to_json(report))
    else:
        uploaded = "" if report.published_to is None else (
            f", {report.chunks_uploaded} chunks uploaded, record on {report.published_to} nodes")
        print(f"snapshot {report.number}: {report.files} files, {report.dirs} dirs, {report.symlinks} symlinks, "
              f"{report.size} bytes; read {report.files_read} files (+{report.added} -{report.removed} "
              f"~{report.changed}){uploaded}")
    if report.under_replicated:
        return fail(f"{report.under_replicated} chunks stored on fewer hosts than asked", EXIT_UNDER_REPLICATED)
    return EXIT_OK


def _read_cap(text: str) -> ReadCap:
    return parse_read_cap(_link_text(text))


@_clean_failures
def run_log(args: argparse.Namespace) -> int:
    lines = open_backend(args.data_dir).folder_log(_read_cap(args.link))
    # The newest snapshot is always kept, so every number below it not listed was pruned.
    pruned = lines[0].number - len(lines) if lines else 0
    if args.json:
        print(to_json({"snapshots": list(lines), "pruned": pruned}))
        return EXIT_OK
    if not lines:
        print("no snapshots yet", file=sys.stderr)
    for e in lines:
        print(f"{e.number:>5}  {_when(e.time_ns)}  {e.files:>8} files  {e.size:>14} bytes  "
              f"+{e.added} -{e.removed} ~{e.changed}")
    if pruned:
        print(f"{pruned} older snapshots pruned by the retention policy (30 days of all, then daily for 6 months)")
    return EXIT_OK


@_clean_failures
def run_prune(args: argparse.Namespace) -> int:
    cap = parse_write_cap(_link_text(args.link))
    report = open_backend(args.data_dir).folder_prune(cap, dry_run=args.dry_run)
    if args.json:
        print(to_json(report))
        return EXIT_OK
    would = "would release" if report.dry_run else "released"
    print(f"{report.kept} snapshots kept, {report.pruned} pruned ({report.newly_pruned} now); {would} "
          f"{report.chunks_released} chunks ({report.bytes_released} bytes) no kept snapshot needs")
    return EXIT_OK


@_clean_failures
def run_restore(args: argparse.Namespace) -> int:
    cap = _read_cap(args.link)
    with progress_display(quiet=args.quiet) as on_progress:
        report = open_backend(args.data_dir).folder_restore(cap, args.directory, number=args.snapshot,
                                                            at_ns=args.at, sub=args.path, on_progress=on_progress)
    if args.json:
        print(to_json(report))
    else:
        print(f"restored snapshot {report.number} ({_when(report.time_ns)}): {report.files} files "
              f"({report.size} bytes), {report.dirs} dirs, {report.symlinks} symlinks"
              + (f", {report.already} files already in place" if report.already else ""))
    return EXIT_OK


@_clean_failures
def run_diff(args: argparse.Namespace) -> int:
    report = open_backend(args.data_dir).folder_diff(_read_cap(args.link), args.a, args.b)
    if args.json:
        print(to_json(report))
        return EXIT_OK
    for mark, paths in (("+", report.added), ("-", report.removed), ("~", report.changed)):
        for path in paths:
            print(f"{mark} {path.encode('utf-8', 'backslashreplace').decode()}")
    return EXIT_OK


@_clean_failures
def run_pin(args: argparse.Namespace) -> int:
    if args.list == (args.link is not None):
        return fail("give a folder link to pin, or --list", EXIT_USAGE)
    body: dict[str, Any] = {}
    if args.link is not None:
        body["link"] = parse_cap(_link_text(args.link)).verify_cap.to_string()  # the node needs no more
    client = answering_node(resolve_data_dir(args.data_dir))
    if client is None:
        return fail("`mu folder pin` needs a running node (mu node): the node fetches and keeps the chunks")
    try:
        reply: dict[str, Any] = (client.call_blocking("GET", "folder-pins") if args.list
                                 else client.run_stream_blocking("folder-pin", body, lambda event: None))
    except ControlError as exc:
        return fail(exc.message, EXIT_FOR_ERROR_CODE.get(exc.code, EXIT_FAILURE))
    if args.json:
        print(to_json(reply))
    elif args.list:
        for p in reply["folders"]:
            print(f"{p['folder']}  snapshot {p['newest']:>5}  {p['chunks']:>8} chunks  pinned {_when(p['pinned_ns'])}")
    else:
        print(f"pinned {reply['chunks']} chunks of {reply['kept']} kept snapshots (of {reply['snapshots']}, newest "
              f"{reply['newest']}); fetched {reply['fetched']} chunks ({reply['bytes_fetched']} bytes)")
    return EXIT_OK
