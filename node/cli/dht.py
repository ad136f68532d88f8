"""``mu peers`` and ``mu dht lookup KEY``: inspect the routing table, run a lookup.

``mu peers`` asks the data dir's backend (node/cli/backend.py): the running
node's live routing table (``GET /v1/peers``), or when no node runs the
table the DHT saved in the data dir; the output is the same.  ``mu dht lookup`` starts a
short-lived DHT node from that table (plus any ``--bootstrap`` addresses),
runs one iterative lookup, saves the table it learned, and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from node.cli.arguments import positive_float
from node.cli.exit_codes import EXIT_NOT_FOUND, EXIT_OK, EXIT_FAILURE, fail
from node.cli.backend import open_backend
from node.cli.results import BackendError, to_json
from node.runtime.config import ConfigError, load_identity, resolve_data_dir

if TYPE_CHECKING:
    from protocol.kademlia import Contact

#: Seconds ``mu dht lookup`` waits for bootstrap and lookup together, by default.
DEFAULT_LOOKUP_TIMEOUT = 30.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    peers = sub.add_parser("peers", help="list the running node's DHT routing table (or the saved one)")
    peers.add_argument("--json", action="store_true", help="machine-readable output")
    peers.set_defaults(func=run_peers)

    dht = sub.add_parser("dht", help="DHT tools")
    dht_sub = dht.add_subparsers(dest="dht_command", metavar="SUBCOMMAND", required=True)
    lookup = dht_sub.add_parser("lookup", help="find the k nodes closest to a 20-byte key (40 hex digits)")
    lookup.add_argument("key", help="40 hex digits (a node ID or a chunk's DHT key)")
    lookup.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT",
                        help="a node to join through (repeatable; default: none, only the saved table)")
    lookup.add_argument("--timeout", type=positive_float, default=DEFAULT_LOOKUP_TIMEOUT,
                        help=f"seconds for joining and the lookup together (default {DEFAULT_LOOKUP_TIMEOUT:g})")
    lookup.add_argument("--json", action="store_true", help="machine-readable output")
    lookup.add_argument("--loopback-devnet", action="store_true",
                        help="the peers are a local test network on 127.0.0.1 (lifts the DHT table's "
                             "per-address-prefix limits for loopback peers)")
    lookup.set_defaults(func=run_lookup)


def run_peers(args: argparse.Namespace) -> int:
    try:
        report = open_backend(args.data_dir).peers()
    except BackendError as exc:
        return fail(exc.message, exc.exit_code)
    if args.json:
        print(to_json(report))
        return EXIT_OK
    print(f"node id: {report.node_id}  ({len(report.peers)} peers)")
    for p in report.peers:
        kind = "mu" if p.mu else "kademlia"
        seen = f"  seen {p.seen_ago_s:.0f}s ago" if p.seen_ago_s is not None else ""
        print(f"{p.node_id}  {p.host}:{p.port}  {kind}{seen}")
    return EXIT_OK


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def run_lookup(args: argparse.Namespace) -> int:
    # Imported here: `mu peers`, in the same group, runs on a node's control API without the DHT or trio (issue 22).
    import trio

    from node.dht import open_dht
    from protocol.kademlia import distance

    try:
        key = bytes.fromhex(args.key)
        if len(key) != 20:
            raise ValueError
    except ValueError:
        return fail("KEY must be 40 hex digits (20 bytes)", EXIT_FAILURE)
    try:
        addresses = [_parse_address(a) for a in args.bootstrap]
    except ValueError as exc:
        return fail(str(exc), EXIT_FAILURE)
    data_dir = resolve_data_dir(args.data_dir)
    try:
        identity = load_identity(data_dir, create=False)
    except ConfigError as exc:
        return fail(str(exc))

    async def go() -> list[Contact] | None:
        async with open_dht(identity, "0.0.0.0", 0, data_dir=data_dir, loopback_devnet=args.loopback_devnet) as dht:
            if not addresses and not len(dht.table):
                return None
            with trio.move_on_after(args.timeout):
                if addresses:
                    await dht.bootstrap(addresses)
                return await dht.lookup(key)
            return []

    found = trio.run(go)
    if found is None:
        return fail("no known peers: pass --bootstrap HOST:PORT", EXIT_FAILURE)
    if args.json:
        print(json.dumps({"key": key.hex(), "closest": [
            {"node_id": c.node_id.hex(), "host": c.host, "port": c.port, "mu": c.is_mu,
             "distance": f"{distance(c.node_id, key):040x}"} for c in found]}))
    else:
        for c in found:
            print(f"{c.node_id.hex()}  {c.host}:{c.port}  distance {distance(c.node_id, key):040x}")
    if not found:
        print("mu: no node answered", file=sys.stderr)
        return EXIT_NOT_FOUND
    return EXIT_OK
