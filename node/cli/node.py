"""``mu node``: run the node (transport, store, ledger, chain client, wallet, watcher).

Stops cleanly on SIGTERM or SIGINT: services are cancelled through their
nursery, the ledger and store are closed, ``node.json`` is removed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from node.cli import EXIT_OK, EXIT_USAGE, fail
from node.runtime.config import resolve_data_dir
from node.runtime.daemon import NodeConfig, open_node
from node.bitcoin.rpc import RPCError, RPCTransportError
from node.store.retention import DEFAULT_GC_PERIOD
from node.exchange.settlement import DEFAULT_POLL_SECONDS, DEFAULT_SETTLE_THRESHOLD, SettlementConfig

DEFAULT_CHAIN_RPC = "http://127.0.0.1:18443/"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("node", help="run the node: serve chunks for sats, settle on chain")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free port)")
    p.add_argument("--chain-rpc", default=DEFAULT_CHAIN_RPC, help="Bitcoin Core JSON-RPC URL (mu chain or bitcoind)")
    p.add_argument("--chain-cookie", default=None, help="RPC cookie file (default: <data-dir>/chain/.cookie)")
    p.add_argument("--price-get", type=int, default=100, help="sats per MiB served (default 100)")
    p.add_argument("--price-put", type=int, default=300, help="sats per MiB stored (default 300)")
    p.add_argument("--retention", type=int, default=30 * 86_400, help="seconds a paid PUT is kept")
    p.add_argument("--free-allowance", type=int, default=1_000, help="sats of service per peer before payment")
    p.add_argument("--min-capacity", type=int, default=10_000, help="smallest channel accepted, sats")
    p.add_argument("--expiry-window", type=int, default=36, help="blocks a channel must have left at open")
    p.add_argument("--min-confirmations", type=int, default=1, help="confirmations a funding output needs")
    p.add_argument("--fee-rate", type=int, default=2, help="sat/vB for channel closes and wallet spends")
    p.add_argument("--quota", type=int, default=None, help="most bytes of chunks to store")
    p.add_argument("--settle-threshold", type=int, default=DEFAULT_SETTLE_THRESHOLD,
                   help="close a channel once it holds this many sats")
    p.add_argument("--settle-poll", type=float, default=DEFAULT_POLL_SECONDS, help="seconds between watcher passes")
    p.add_argument("--dht-port", type=int, default=0, help="UDP port of the DHT (default 0: any free port)")
    p.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT",
                   help="a DHT node to join through when no saved contact answers (repeatable)")
    p.add_argument("--loopback-devnet", action="store_true",
                   help="a local test network: many nodes on 127.0.0.1 may share the DHT table "
                        "(lifts its per-address-prefix limits for loopback peers)")
    p.add_argument("--gc-period", type=float, default=DEFAULT_GC_PERIOD,
                   help="seconds between passes deleting chunks whose paid retention ran out")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    data_dir = resolve_data_dir(args.data_dir)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {args.listen!r}")
    cookie = Path(args.chain_cookie) if args.chain_cookie else data_dir / "chain" / ".cookie"
    bootstrap = []
    for item in args.bootstrap:
        b_host, b_sep, b_port = item.rpartition(":")
        if not b_sep or not b_port.isdigit():
            raise ValueError(f"--bootstrap must be HOST:PORT, got {item!r}")
        bootstrap.append((b_host, int(b_port)))
    return NodeConfig(
        data_dir=data_dir, chain_rpc=args.chain_rpc, chain_cookie=cookie, listen_host=host, listen_port=int(port),
        price_per_mib_get=args.price_get, price_per_mib_put=args.price_put, retention_seconds=args.retention,
        free_allowance=args.free_allowance, min_capacity=args.min_capacity, expiry_window=args.expiry_window,
        min_confirmations=args.min_confirmations, fee_rate=args.fee_rate, quota_bytes=args.quota,
        settlement=SettlementConfig(settle_threshold=args.settle_threshold, poll_seconds=args.settle_poll),
        dht_port=args.dht_port, bootstrap=tuple(bootstrap), loopback_devnet=args.loopback_devnet,
        gc_period=args.gc_period,
    )


async def serve(config: NodeConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_node(config) as node:
            print(f"node {node.identity.node_id.hex()} listening on {config.listen_host}:{node.transport.port}",
                  flush=True)
            async for signum in signals:
                logging.getLogger("mu.node").info("stopping on signal %d", signum)
                break


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        trio.run(serve, config)
    except (RPCTransportError, RPCError) as exc:
        return fail(f"chain backend {config.chain_rpc}: {exc}", EXIT_USAGE)
    except OSError as exc:
        return fail(f"cannot listen on {args.listen}: {exc}", EXIT_USAGE)
    return EXIT_OK
