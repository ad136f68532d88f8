"""``mu node``: run the node (transport, store, ledger, chain client, wallet, watcher).

Stops cleanly on SIGTERM or SIGINT: services are cancelled through their
nursery, the ledger and store are closed, ``node.json`` is removed.  A
second ``mu node`` on a data dir in use exits 1 naming the running PID
(``node.lock``, node/runtime/lock.py), and one whose listen port is taken
exits 1 naming the port.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import signal
import sys
from pathlib import Path

import trio

from node.cli.config import add_settings_arguments, settings_from_args
from node.cli.exit_codes import EXIT_OK, EXIT_FAILURE, fail
from node.runtime.config import resolve_data_dir
from node.runtime.daemon import NodeConfig, open_node
from node.runtime.lock import DataDirLocked
from node.runtime.memory import limit_malloc_arenas
from node.bitcoin.rpc import RPCError, RPCTransportError
from node.exchange.settlement import SettlementConfig
from node.files.upkeep import UpkeepConfig
from node.runtime.settings import EffectiveSettings
from protocol.payments.terms import MAX_OFFER


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("node", help="run the node: serve chunks for sats, settle on chain",
                       description="Run the node. Each setting comes from its flag, else the data dir's "
                                   "config.toml, else its default (see `mu config show`).")
    add_settings_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    p.set_defaults(func=run)


def _address(text: str, origin: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{origin} must be HOST:PORT, got {text!r}")
    return host, int(port)


def _ui_address(text: str, origin: str) -> str:
    """The control API's bind address: one IP address; the Host check accepts it (specs/network.md §6 Security)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{origin} must be an IP address, got {text!r}") from None
    if address.is_unspecified:
        raise ValueError(f"{origin} must name one address of this machine, not {text}: "
                         "browsers must reach the node by the address it checks in their Host header")
    return str(address)


# Size suffixes of ``--offer`` (decimal as disks are sold, binary as chunks are counted).
SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
              "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def parse_size(text: str, origin: str) -> int:
    """Bytes of a size such as ``100GB``, ``512MiB`` or ``4096``; ValueError naming ``origin`` otherwise."""
    stripped = text.strip()
    digits = len(stripped) - len(stripped.lstrip("0123456789"))
    number, unit = stripped[:digits], stripped[digits:].strip().upper()
    if not number or unit not in SIZE_UNITS or int(number) * SIZE_UNITS[unit] > MAX_OFFER:
        raise ValueError(f"{origin} must be a size such as 100GB, 512MiB or a number of bytes "
                         f"(at most {MAX_OFFER} bytes), got {text!r}")
    return int(number) * SIZE_UNITS[unit]


def config_from_settings(data_dir: Path, effective: EffectiveSettings) -> NodeConfig:
    """The node's configuration from its effective settings; ValueError names a malformed one."""
    s = effective.settings
    host, port = _address(s.listen, effective.origin("listen"))
    cookie = Path(s.chain_cookie) if s.chain_cookie else data_dir / "chain" / ".cookie"
    bootstrap = tuple(_address(item, effective.origin("bootstrap")) for item in s.bootstrap)
    if not (math.isfinite(s.audit_period) and s.audit_period > 0):
        raise ValueError(f"{effective.origin('audit_period')} must be a positive number of seconds")
    if s.max_spend_per_month < 0:
        raise ValueError(f"{effective.origin('max_spend_per_month')} must be a non-negative number of sats")
    return NodeConfig(
        data_dir=data_dir, chain_rpc=s.chain_rpc, chain_cookie=cookie, listen_host=host, listen_port=port,
        price_per_mib_get=s.price_get, price_per_mib_put=s.price_put, retention_seconds=s.retention,
        free_allowance=s.free_allowance, min_capacity=s.min_capacity, expiry_window=s.expiry_window,
        min_confirmations=s.min_confirmations, fee_rate=s.fee_rate, quota_bytes=s.quota,
        max_price_per_mib_get=s.max_price_get, max_price_per_mib_put=s.max_price_put,
        settlement=SettlementConfig(settle_threshold=s.settle_threshold, poll_seconds=s.settle_poll),
        dht_port=s.dht_port, bootstrap=bootstrap, loopback_devnet=s.loopback_devnet, gc_period=s.gc_period,
        ui_bind=_ui_address(s.ui_bind, effective.origin("ui_bind")),
        upkeep=UpkeepConfig(audit_period=s.audit_period, max_spend_per_month=s.max_spend_per_month),
        offer_bytes=parse_size(s.offer, effective.origin("offer")),
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
        config = config_from_settings(resolve_data_dir(args.data_dir), settings_from_args(args))
    except ValueError as exc:  # ConfigError is a ValueError too
        return fail(str(exc), EXIT_FAILURE)
    limit_malloc_arenas()  # before any thread allocates
    try:
        trio.run(serve, config)
    except DataDirLocked as exc:
        return fail(str(exc), EXIT_FAILURE)
    except (RPCTransportError, RPCError) as exc:
        return fail(f"chain backend {config.chain_rpc}: {exc}", EXIT_FAILURE)
    except OSError as exc:
        return fail(f"cannot listen on {config.listen_host}:{config.listen_port}: {exc}", EXIT_FAILURE)
    return EXIT_OK
