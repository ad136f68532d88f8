"""``mu node``: the running node, composed of its services in one nursery.

``open_node(config)`` opens, in order, the ledger, the chunk store, the
chain backend client and the wallet, builds the host's signed terms, and
starts the transport (serving chunks only against payments) and the
settlement watcher as services of one nursery (``nursery.start``), so
later services (the DHT, a control API, the retention GC) slot in beside
them.  Where it needs the time of day (a paid PUT's retention, the GC) it
asks ``wall_clock`` (unix seconds), which tests replace.  Once
listening it writes ``node.json`` in the data dir (node id, host, port,
pid) so scripts and tests can find it; it is removed on a clean stop.
Before anything else it takes ``node.lock`` (node/runtime/lock.py): one
node per data dir, and only that node writes or removes ``node.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from node.runtime.config import load_identity, write_secret_file
from node.runtime.lock import NODE_LOCK_FILE, hold_lock
from node.runtime.settings import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT, DEFAULTS
from node.api.control import ControlServer
from node.api.names import register_name_routes
from node.dht import ContactInfo, DhtNode, open_dht
from node.files.locate import PeerDialer
from node.files.network import NetworkService, register_report_routes
from node.files.upkeep import UpkeepConfig
from node.folders.network import FolderService
from node.sync.service import SyncService
from node.web import WebApp
from node.exchange.paying import PaidPeers
from node.store.retention import GarbageCollector
from node.exchange import BalanceBook, ChainView, PaidChunkServer, PayeeBook, Payer
from node.ledger import LEDGER_FILE, Ledger
from node.bitcoin.rpc import RPCClient
from node.exchange.settlement import SettlementConfig, SettlementWatcher
from node.store import STORE_DIR, ChunkStore
from node.transport import Transport, open_transport
from node.bitcoin.wallet import Wallet
from protocol.identity import Identity
from protocol.payments import Terms

log = logging.getLogger("mu.node")

NODE_INFO_FILE = "node.json"
# Wallet key indexes the node uses (node.bitcoin.wallet derives KEY_COUNT keys).
PAYMENT_KEY_INDEX = 0  # receives earnings: the wallet's receive key
PAYER_KEY_INDEX = 2  # signs our own channel payments


@dataclass(slots=True)
class NodeConfig:
    """Everything ``mu node`` runs with; the defaults are ``NodeSettings``' (node/runtime/settings.py)."""

    data_dir: Path
    chain_rpc: str
    chain_cookie: Path | None = None
    listen_host: str = DEFAULT_LISTEN_HOST
    listen_port: int = DEFAULT_LISTEN_PORT
    price_per_mib_get: int = DEFAULTS.price_get
    price_per_mib_put: int = DEFAULTS.price_put
    retention_seconds: int = DEFAULTS.retention
    free_allowance: int = DEFAULTS.free_allowance
    min_capacity: int = DEFAULTS.min_capacity
    expiry_window: int = DEFAULTS.expiry_window
    min_confirmations: int = DEFAULTS.min_confirmations
    fee_rate: int = DEFAULTS.fee_rate
    quota_bytes: int | None = DEFAULTS.quota
    max_price_per_mib_get: int = DEFAULTS.max_price_get
    max_price_per_mib_put: int = DEFAULTS.max_price_put
    settlement: SettlementConfig = field(default_factory=SettlementConfig)
    dht_port: int = DEFAULTS.dht_port
    bootstrap: tuple[tuple[str, int], ...] = ()
    # Lift the DHT's address-prefix limits for loopback peers (specs/dht.md §5.3 Address limits).
    loopback_devnet: bool = DEFAULTS.loopback_devnet
    gc_period: float = DEFAULTS.gc_period
    ui_bind: str = DEFAULTS.ui_bind  # the control API's and web app's address (specs/network.md §6 Security)
    upkeep: UpkeepConfig = field(default_factory=UpkeepConfig)  # audits, repair, renewal (specs/erasure.md §7.5)
    offer_bytes: int = 0  # storage hosted for reciprocating peers (specs/payments.md §Service balance)


@dataclass(slots=True)
class Node:
    """A running node's parts (what tests and later services use)."""

    config: NodeConfig
    identity: Identity
    ledger: Ledger
    store: ChunkStore
    wallet: Wallet
    terms: Terms
    book: PayeeBook
    payer: Payer
    watcher: SettlementWatcher
    transport: Transport
    nursery: trio.Nursery
    dht: DhtNode
    network: NetworkService
    gc: GarbageCollector


def write_node_info(data_dir: Path, info: dict[str, object]) -> None:
    """Write ``node.json`` atomically (readers never see half a file)."""
    write_secret_file(data_dir / NODE_INFO_FILE, json.dumps(info, sort_keys=True).encode())


@asynccontextmanager
async def open_node(config: NodeConfig, *, wall_clock: Callable[[], float] = time.time) -> AsyncIterator[Node]:
    """Run a node until the ``async with`` body ends; then stop every service.

    Raises:
        DataDirLocked: another process runs a node on this data dir; nothing was touched.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    # The lock comes before any other file: a second node on this data dir
    # stops here, before it could touch the first one's ledger or node.json.
    with hold_lock(config.data_dir / NODE_LOCK_FILE):
        async with _open_locked_node(config, wall_clock) as node:
            yield node


async def _join_then_announce(dht: DhtNode, bootstrap: list[tuple[str, int]], network: NetworkService) -> None:
    """Rejoin the DHT, announce the pinned roots to the nodes it found, then reconcile our open
    payer channels with their hosts (dialled through the DHT: specs/payments.md §After a crash)."""
    await dht.rejoin(bootstrap)
    await network.announce_pinned()
    if network.paid is not None:
        # Its attempts are few and spaced (specs/payments.md §After a crash): each dials, whatever an
        # earlier failure taught the dialer (a host killed and restarted meanwhile is back on a new port).
        await network.paid.reconcile(functools.partial(network.dialer.session, despite_mark=True))


@asynccontextmanager
async def _open_locked_node(config: NodeConfig, wall_clock: Callable[[], float]) -> AsyncIterator[Node]:
    data_dir = config.data_dir
    identity = load_identity(data_dir)
    ledger = await trio.to_thread.run_sync(Ledger.open, data_dir / LEDGER_FILE)
    store = await trio.to_thread.run_sync(lambda: ChunkStore(data_dir / STORE_DIR, config.quota_bytes))
    try:
        async with RPCClient(config.chain_rpc, cookie_path=config.chain_cookie) as rpc:
            wallet = await Wallet.open(data_dir, rpc, fee_rate=config.fee_rate)
            payment_key = wallet.keys[PAYMENT_KEY_INDEX]
            terms = Terms(
                price_per_mib_get=config.price_per_mib_get, price_per_mib_put=config.price_per_mib_put,
                retention_seconds=config.retention_seconds, free_allowance=config.free_allowance,
                min_capacity=config.min_capacity, expiry_window=config.expiry_window,
                min_confirmations=config.min_confirmations, fee_rate=config.fee_rate,
                payment_pubkey=payment_key.public_key.data, identity_key=identity.public_key,
                offer=config.offer_bytes,
            ).signed(identity)
            chain = ChainView(rpc)
            book = PayeeBook(ledger=ledger, terms=terms, payee_key=payment_key, chain=chain)
            balance = BalanceBook(ledger=ledger, identity=identity, offer=config.offer_bytes)
            payer = Payer(ledger=ledger, key=wallet.keys[PAYER_KEY_INDEX],
                          max_price_per_mib_get=config.max_price_per_mib_get,
                          max_price_per_mib_put=config.max_price_per_mib_put, balance=balance)
            watcher = SettlementWatcher(ledger=ledger, chain=chain, book=book, payer_key=wallet.keys[PAYER_KEY_INDEX],
                                        refund_script=wallet.script_pubkey(), config=config.settlement)
            server = PaidChunkServer(store, book, wall_clock=wall_clock, balance=balance)
            async with open_transport(identity, server, payment_key=payment_key.public_key.data,
                                      host=config.listen_host, port=config.listen_port,
                                      terms=terms.to_wire()) as transport:
                contact = ContactInfo(tcp_port=transport.port, payment_pubkey=payment_key.public_key.data)
                async with open_dht(identity, config.listen_host, config.dht_port, data_dir=data_dir,
                                    contact=contact, loopback_devnet=config.loopback_devnet) as dht, \
                        trio.open_nursery() as nursery:
                    await nursery.start(watcher.serve)
                    # The network operations and the CLI's control API (specs/network.md §6).
                    control = ControlServer(data_dir, identity.node_id, host=config.ui_bind)
                    network = NetworkService(data_dir, store, PeerDialer(dht, transport, nursery=nursery),
                                             PaidPeers(payer, wallet, rpc, nursery=nursery))
                    network.register(control)
                    upkeep = network.upkeep_timer(config.upkeep)
                    control.add_status("upkeep", upkeep.status)
                    await nursery.start(upkeep.serve)
                    folders = FolderService(data_dir, store, network.dialer, network.paid)  # specs/folders.md
                    folders.register(control)
                    # Synced folders: each device's rounds through records and hosts (specs/sync.md §14).
                    sync = SyncService(data_dir, store, network.dialer, network.paid, node_id=identity.node_id)
                    server.on_sync_notify = sync.notified  # SYNC_NOTIFY from other devices' nodes (§16 Notify)
                    sync.register(control)
                    await nursery.start(sync.serve)
                    # `mu peers` and `mu earnings` read the live table and the open ledger.
                    register_report_routes(control, dht, ledger)
                    register_name_routes(control, dht)  # `mu name publish / resolve` (specs/dht.md §7.3)
                    # The web app on the same server (specs/network.md §Web app); `mu ui` logs in.
                    web = WebApp(data_dir, network, ledger, wallet, dht)
                    web.register(control)
                    await nursery.start(web.serve)
                    # Expired paid chunks go, pinned ones stay (specs/network.md §7).
                    gc = GarbageCollector(store, dht=dht, period=config.gc_period, wall_clock=wall_clock)
                    control.add_status("gc", gc.status)
                    await nursery.start(gc.serve)
                    await nursery.start(control.serve)
                    write_node_info(data_dir, {
                        "node_id": identity.node_id.hex(), "host": config.listen_host, "port": transport.port,
                        "pid": os.getpid(), "payment_pubkey": payment_key.public_key.data.hex(),
                        "address": wallet.address(), "dht_port": dht.port, "control_port": control.port,
                    })
                    log.info("node %s listening on %s:%d", identity.node_id.hex(), config.listen_host, transport.port)
                    # Only once listening: ping the saved contacts, else join through the
                    # bootstrap peers; dead saved contacts never delay the start (specs/dht.md §5.4).
                    # Pins survive restarts: once joined, announce ourselves again for every pinned root.
                    nursery.start_soon(_join_then_announce, dht, list(config.bootstrap), network)
                    try:
                        yield Node(config=config, identity=identity, ledger=ledger, store=store, wallet=wallet,
                                   terms=terms, book=book, payer=payer, watcher=watcher, transport=transport,
                                   nursery=nursery, dht=dht, network=network, gc=gc)
                    finally:
                        (data_dir / NODE_INFO_FILE).unlink(missing_ok=True)
                        nursery.cancel_scope.cancel()
    finally:
        store.close()
        ledger.close()
