"""``mu sync``: folders kept the same on every device, through paid hosts (specs/sync.md).

The running node does the syncing (node/sync/service.py); these commands
ask it through the control API: ``add`` a directory (a new folder, whose
write and read links are printed once, or ``--link`` to join one from
another device: a read link makes a read-only device), ``ls``, ``status``
(one folder, or every folder without a directory: files, bytes, pending
up and down, the last change seen from each device, conflicts; specs/sync.md
§15 Status), ``pause``, ``resume`` and ``remove`` (the files stay).

A link given as ``-`` is read from stdin, so it need not sit in the shell
history or the process list.

Exit codes: 0 ok, 1 operational error (no node running), 2 not found (the
directory is not synced), 4 usage error (a bad link).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from node.cli.backend import open_backend
from node.cli.exit_codes import EXIT_OK, fail
from node.cli.results import BackendError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("sync", help="keep a folder the same on every device: add, ls, status, pause, resume, remove")
    commands = p.add_subparsers(dest="sync_command", metavar="COMMAND", required=True)
    a = commands.add_parser("add", help="sync a directory (a new folder, or --link to join one)")
    a.add_argument("directory", type=Path, help="the directory to keep in sync")
    a.add_argument("--link", default=None,
                   help="join the folder of this write or read link (- reads it from stdin; default: a new folder)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=run_add)
    ls = commands.add_parser("ls", help="the synced folders")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_ls)
    st = commands.add_parser("status", help="files, bytes, pending up/down, devices seen, conflicts (every folder without DIR)")
    st.add_argument("directory", type=Path, nargs="?", default=None, help="a synced directory (default: all)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=run_status)
    for name, text in (("pause", "stop syncing a directory for now"), ("resume", "sync a paused directory again"),
                       ("remove", "stop syncing a directory (its files stay)")):
        c = commands.add_parser(name, help=text)
        c.add_argument("directory", type=Path, help="a synced directory")
        c.add_argument("--json", action="store_true", help="machine-readable output")
        c.set_defaults(func=run_one, action=name)


def _print(reply: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(reply, indent=2, sort_keys=True))
        return
    for key, value in sorted(reply.items()):
        print(f"{key}: {value}")


def run_add(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"path": str(args.directory.resolve())}
    if args.link is not None:
        body["link"] = sys.stdin.readline().strip() if args.link == "-" else args.link
    try:
        reply = open_backend(args.data_dir).sync("add", body)
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    _print(reply, args.json)
    return EXIT_OK


def run_ls(args: argparse.Namespace) -> int:
    try:
        reply = open_backend(args.data_dir).sync("ls", {})
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    if args.json:
        _print(reply, True)
        return EXIT_OK
    folders = reply.get("folders")
    for folder in folders if isinstance(folders, list) else []:
        print(f"{folder['path']}  {_state(folder)}  {folder['files']} files  {folder['bytes']} bytes")
    return EXIT_OK


def _state(folder: dict[str, Any]) -> str:
    """paused, failing, syncing or up to date, as the web page says (specs/network.md §Pages); read-only noted."""
    last = folder.get("last_round") or {}
    if folder["paused"]:
        state = "paused"
    elif "error" in last:
        state = "failing"
    elif (folder["pending_up"] and not folder["read_only"]) or folder["pending_down"]:
        state = "syncing"
    else:
        state = "up to date"
    return f"{state} (read-only)" if folder["read_only"] else state


def _print_status(folder: dict[str, Any]) -> None:
    print(f"{folder['path']}  {_state(folder)}{'' if folder['watching'] else '  (not watching: rescans)'}")
    print(f"  {folder['files']} files  {folder['bytes']} bytes  "
          f"pending up {folder['pending_up']}  pending down {folder['pending_down']}")
    for device in folder["devices_seen"]:
        seen = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(device["seen_ns"] / 1e9))
        print(f"  device {device['device']}  seq {device['seq']}  seen {seen} UTC"
              f"{'' if device['notifiable'] else '  (polled only)'}")
    if folder["conflict_count"]:
        print(f"  {folder['conflict_count']} conflict copies:")
        for path in folder["conflicts"]:
            print(f"    {path}")
    if folder.get("unreadable_count"):
        print(f"  {folder['unreadable_count']} paths not synced until they can be read:")
        for item in folder["unreadable"]:
            print(f"    {item['path']}: {item['reason']}")
    if folder.get("unwritable_count"):
        print(f"  {folder['unwritable_count']} paths not synced here until they can be written:")
        for item in folder["unwritable"]:
            print(f"    {item['path']}: {item['reason']}")
    last = folder.get("last_round")
    if last and "error" in last:
        print(f"  last round failed: {last['error']}")


def run_status(args: argparse.Namespace) -> int:
    try:
        backend = open_backend(args.data_dir)
        if args.directory is None:
            folders = backend.sync("ls", {}).get("folders")
            reply: dict[str, Any] = {"folders": folders if isinstance(folders, list) else []}
        else:
            reply = backend.sync("status", {"path": str(args.directory.resolve())})
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    if args.json:
        _print(reply, True)
        return EXIT_OK
    for folder in reply["folders"] if args.directory is None else [reply]:
        _print_status(folder)
    return EXIT_OK


def run_one(args: argparse.Namespace) -> int:
    try:
        reply = open_backend(args.data_dir).sync(args.action, {"path": str(args.directory.resolve())})
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    _print(reply, args.json)
    return EXIT_OK
