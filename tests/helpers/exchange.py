"""The fetching side of paid-exchange tests: the library code a node uses, in the test process.

``open_fetcher`` gives a payer with its own identity, ledger, funded
wallet and transport; ``seed_chunks`` fills a host's store on disk before
its ``mu node`` starts.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from node.runtime.config import load_identity
from node.runtime.daemon import PAYER_KEY_INDEX, PAYMENT_KEY_INDEX
from node.exchange import HostLink, Payer
from node.ledger import LEDGER_FILE, Ledger
from node.bitcoin.rpc import RPCClient
from node.store import STORE_DIR, ChunkStore
from node.transport import ChunkServer, SessionBroken, SessionClosed, Transport, TransportError, open_transport
from node.bitcoin.wallet import Wallet
from protocol.payments.messages import ChannelId
from tests.helpers.chain import MuChain
from tests.helpers.node import MuNode



def seed_chunks(data_dir: Path, count: int, size: int) -> list[bytes]:
    """Write ``count`` random chunks of ``size`` bytes into ``data_dir``'s store; return their addresses."""
    addresses = []
    with ChunkStore(data_dir / STORE_DIR) as store:
        for _ in range(count):
            data = os.urandom(size)
            address = hashlib.sha256(data).digest()
            store.put(address, data)
            addresses.append(address)
    return addresses


@dataclass
class Fetcher:
    chain: MuChain
    rpc: RPCClient
    ledger: Ledger
    wallet: Wallet
    payer: Payer
    transport: Transport

    async def link(self, host: MuNode) -> HostLink:
        session = await self.transport.connect(host.node_id, "127.0.0.1", host.port)
        return await self.payer.link(session)

    async def mine(self, blocks: int = 1) -> None:
        await self.rpc.call("generatetoaddress", blocks, self.wallet.address(5))

    async def open_channel(self, link: HostLink, *, capacity: int, expiry_blocks: int = 144) -> ChannelId:
        tip = int(await self.rpc.call("getblockcount"))
        channel = await self.payer.fund_channel(link, self.wallet, capacity=capacity, expiry=tip + expiry_blocks)
        await self.mine(1)
        await self.payer.announce(link)
        return channel


@asynccontextmanager
async def open_fetcher(data_dir: Path, chain: MuChain, *, max_price_get: int = 10_000,
                       faucet_blocks: int = 1) -> AsyncIterator[Fetcher]:
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = load_identity(data_dir)
    ledger = Ledger.open(data_dir / LEDGER_FILE)
    store = ChunkStore(data_dir / STORE_DIR)
    try:
        async with RPCClient(chain.url, cookie_path=chain.cookie_path) as rpc:
            wallet = await Wallet.open(data_dir, rpc)
            if faucet_blocks:
                await wallet.faucet(faucet_blocks)
            payer = Payer(ledger=ledger, key=wallet.keys[PAYER_KEY_INDEX], max_price_per_mib_get=max_price_get,
                          max_price_per_mib_put=max_price_get)
            async with open_transport(identity, ChunkServer(store),
                                      payment_key=wallet.keys[PAYMENT_KEY_INDEX].public_key.data) as transport:
                yield Fetcher(chain=chain, rpc=rpc, ledger=ledger, wallet=wallet, payer=payer, transport=transport)
    finally:
        store.close()
        ledger.close()


async def address_balance(rpc: RPCClient, address: str) -> int:
    """Sats held by ``address`` (scantxoutset, confirmed outputs)."""
    from node.bitcoin.rpc import btc_to_sats

    scan = await rpc.call("scantxoutset", "start", [f"addr({address})"])
    return sum(btc_to_sats(u["amount"]) for u in scan["unspents"])


async def payer_lines(process: trio.Process) -> AsyncIterator[list[str]]:
    """The words of each line ``tests.helpers.payer_child`` prints, as they come."""
    assert process.stdout is not None
    pending = b""
    async for piece in process.stdout:
        pending += piece
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.decode().split()


async def wait_for(predicate, *, deadline: float = 30.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``predicate()`` (sync or async) until truthy, within ``deadline`` seconds (for subprocesses)."""
    with trio.fail_after(deadline):
        while True:
            value = predicate()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await trio.sleep(interval)  # polling another process, bounded by fail_after


class CountingFetch(Protocol):
    """A test's fetch that counts what arrived and sets (and replaces) ``changed`` at each answer and at its end."""

    received: dict[bytes, bytes]
    changed: trio.Event

    async def fetch(self, fetcher: Fetcher, link: HostLink, addresses: list[bytes]) -> None: ...


async def fetch_through_a_host_kill(counting: CountingFetch, fetcher: Fetcher, link: HostLink, addresses: list[bytes],
                                    host: MuNode, *, rng: random.Random | None, after_most: int,
                                    delay_most: float = 0.0) -> tuple[bool, bool]:
    """Fetch ``addresses``; with ``rng``, kill -9 the host 1..``after_most`` answers in; return (killed, interrupted).

    The kill comes a random number of answers into the fetch, while the
    other requests of the window are in flight (a fetch that ends first is
    killed at its end, so every round with ``rng`` has its crash), then
    ``delay_most`` seconds at most later: the delay picks the crash moment,
    it synchronises nothing.  ``interrupted``: the fetch failed with its
    session.  The caller restarts the host.
    """
    killed = False
    fetching = True

    async def killer(rng: random.Random) -> None:
        nonlocal killed
        target = len(counting.received) + rng.randint(1, after_most)
        while fetching and len(counting.received) < target:
            await counting.changed.wait()
        if delay_most:
            await trio.sleep(rng.uniform(0, delay_most))
        killed = True
        await host.kill()

    async def fetch() -> None:
        nonlocal fetching
        try:
            await counting.fetch(fetcher, link, addresses)
        finally:
            fetching = False

    interrupted = False
    try:
        async with trio.open_nursery() as nursery:
            if rng is not None:
                nursery.start_soon(killer, rng)
            await fetch()
    except* (SessionBroken, SessionClosed, TransportError):
        interrupted = True
    return killed, interrupted
