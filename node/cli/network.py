"""``mu status`` and ``mu pin``, and the node-backed ``mu add`` / ``mu get`` (specs/network.md §6).

These commands talk to the running node (``mu node``) through its control
API (node/api/control.py), found through the data dir's ``control.port`` and
``control.token`` files.  ``mu add`` and ``mu get`` (node/cli/files.py) call
:func:`add_via_node` / :func:`get_via_node` when a node is running, so the
file goes to, or comes from, the network.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import trio

from node.cli.exit_codes import EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, fail
from node.runtime.config import resolve_data_dir
from node.api.control import ControlClient, ControlError, NodeNotRunning

Json = dict[str, Any]
_EXIT_FOR = {"not-found": EXIT_NOT_FOUND, "integrity": EXIT_INTEGRITY}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="show the running node's status")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_status)
    p = sub.add_parser("pin", help="make the running node fetch a file, host it and earn from it")
    p.add_argument("link", help="mu:ROOT#KEY link, or a bare root (the node hosts the ciphertext without reading it)")
    p.add_argument("--max-price", type=int, default=None,
                   help="most sats per MiB paid to a host (default: the node's maximum)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run_pin)


def running_node(data_dir_option: str | None) -> ControlClient | None:
    """The client of the node whose control files are in this data dir, or None."""
    try:
        return ControlClient.from_data_dir(resolve_data_dir(data_dir_option))
    except NodeNotRunning:
        return None


def node_for_cli(data_dir_option: str | None) -> ControlClient | None:
    """The client of a node that runs on this data dir and answers, or None (then work locally).

    A port file left by a node that was killed does not count: the node must answer ``status``.
    """
    client = running_node(data_dir_option)
    if client is None:
        return None
    try:
        trio.run(client.call, "GET", "status")
    except ControlError:
        return None
    return client


def call_node(args: argparse.Namespace, method: str, path: str, body: Json | None = None) -> Json:
    """Call the node of ``args.data_dir`` once; raises ControlError (NodeNotRunning if none)."""
    client = ControlClient.from_data_dir(resolve_data_dir(args.data_dir))
    return trio.run(client.call, method, path, body)


def _print_tree(value: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                print(f"{pad}{key}:")
                _print_tree(item, indent + 1)
            else:
                print(f"{pad}{key}: {item}")
    elif isinstance(value, list):
        for item in value:
            _print_tree(item, indent) if isinstance(item, (dict, list)) else print(f"{pad}- {item}")
    else:
        print(f"{pad}{value}")


def _show_event(event: Json, quiet: bool) -> None:
    if quiet:
        return
    kind = event.get("event")
    if kind == "progress":
        rate = event.get("rate", 0) / (1 << 20)
        print(f"\r{event.get('chunks_done', 0) + event.get('local_chunks', 0)} chunks, "
              f"{event.get('bytes_fetched', 0) >> 20} MiB fetched, {rate:.1f} MiB/s, "
              f"{event.get('sats_spent', 0)} sats", end="", file=sys.stderr, flush=True)
    elif kind == "replicated":
        print(f"\rchunk {event['address'][:12]} on {event['replicas']} nodes", end="", file=sys.stderr, flush=True)
    elif kind == "added":
        print(f"encrypted {event['chunks']} chunks; replicating", file=sys.stderr)


def stream_to_node(client: ControlClient, path: str, body: Json, *, quiet: bool) -> Json:
    """Run a streaming operation on the node, showing progress on stderr; return its result."""
    try:
        return trio.run(client.run_stream, path, body, lambda e: _show_event(e, quiet))
    finally:
        if not quiet:
            print(file=sys.stderr)


def _finish(result: Json, as_json: bool, headline: str) -> int:
    if as_json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(headline)
    return EXIT_OK


def add_via_node(client: ControlClient, path: Path, *, convergent: bool, as_json: bool, quiet: bool,
                 chunk_size: int | None = None, name: str | None = None) -> int:
    """``mu add`` when a node runs: encrypt, replicate, announce; print the link."""
    body: Json = {"path": str(path.resolve()), "convergent": convergent}
    if chunk_size is not None:
        body["chunk_size"] = chunk_size
    if name is not None:
        body["name"] = name
    try:
        result = stream_to_node(client, "add", body, quiet=quiet)
    except ControlError as exc:
        return fail(exc.message, _EXIT_FOR.get(exc.code, EXIT_USAGE))
    if not as_json and not quiet:
        print(f"{result['chunks']} chunks, {result['replicas_confirmed']} replicas confirmed", file=sys.stderr)
    return _finish(result, as_json, result["link"])


def get_via_node(client: ControlClient, link: str, output: Path | None, *, max_price: int | None, as_json: bool,
                 quiet: bool) -> int:
    """``mu get`` when a node runs: fetch from the network into ``output``.

    With ``output`` None it is ``mu get --raw``: the node fetches and verifies
    every ciphertext chunk into its store, no key needed (specs/chunks.md §6.5).
    """
    body: Json = {"link": link}
    if output is None:
        body["raw"] = True
    else:
        body["output"] = str(output.resolve())
    if max_price is not None:
        body["max_price_per_mib"] = max_price
    try:
        result = stream_to_node(client, "get", body, quiet=quiet)
    except ControlError as exc:
        return fail(exc.message, _EXIT_FOR.get(exc.code, EXIT_USAGE))
    if output is None:
        return _finish(result, as_json, f"verified {result['chunks']} chunks ({result['data_chunks']} data, "
                                        f"{result['size']} bytes of ciphertext) into the store, "
                                        f"{result['sats_spent']} sats")
    return _finish(result, as_json, f"{result['path']}: {result['size']} bytes, {result['sats_spent']} sats")


def run_status(args: argparse.Namespace) -> int:
    try:
        reply = call_node(args, "GET", "status")
    except ControlError as exc:
        return fail(exc.message, EXIT_USAGE)
    if args.json:
        print(json.dumps(reply, sort_keys=True))
    else:
        _print_tree(reply)
    return EXIT_OK


def run_pin(args: argparse.Namespace) -> int:
    client = running_node(args.data_dir)
    if client is None:
        return fail("no node is running (start one with `mu node`)", EXIT_USAGE)
    try:
        body: Json = {"link": args.link}
        if args.max_price is not None:
            body["max_price_per_mib"] = args.max_price
        result = stream_to_node(client, "pin", body, quiet=args.quiet or args.json)
    except ControlError as exc:
        return fail(exc.message, _EXIT_FOR.get(exc.code, EXIT_USAGE))
    return _finish(result, args.json, f"pinned {args.link[:24]}...: {result['size']} bytes, hosting")
