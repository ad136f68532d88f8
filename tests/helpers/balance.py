"""In-process nodes for service balance tests and scripts/bench-reciprocity: real transports on loopback,
real SQLite ledgers and stores.

Each ``BalancePeer`` is what ``open_node`` assembles for the exchange
(terms with an ``offer``, ``PayeeBook``, ``BalanceBook``, ``Payer``,
``PaidChunkServer``), with a chain that only tells its tip: channels are
recorded in both ledgers as if funded (``open_channel``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from node.exchange import BalanceBook, ChainView, HostLink, PaidChunkServer, PayeeBook, Payer
from node.exchange._channels import params_to_blob
from node.ledger import ChannelRecord, Ledger
from node.store import ChunkStore
from node.transport import Transport, open_transport
from protocol.bitcoin import OutPoint, PrivateKey
from protocol.bitcoin.channel import ChannelParams
from protocol.identity import Identity
from protocol.payments import ChannelStatus, Role, Terms
from protocol.payments.messages import ChannelId
from protocol.payments.balance import BalanceTerms, PeerBalance

# Small thresholds: a test crosses them in a few dozen requests of 64 KiB.
TEST_TERMS = BalanceTerms(payment_threshold=200, in_flight_limit=100, disconnect_threshold=400)
CHUNK_SIZE = 64 * 1024  # 19 sats per PUT at 300 sats per MiB, 7 per GET at 100
PRICE_PER_MIB_GET, PRICE_PER_MIB_PUT = 100, 300
CHANNEL_EXPIRY = 10_000  # blocks: the test chain's tip is 500


class Chain:
    """The chain backend's tip, far below the test channels' deadline (nothing else is asked)."""

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "getblockcount"
        return 500


@dataclass
class BalancePeer:
    identity: Identity
    payer_key: PrivateKey
    payee_key: PrivateKey
    ledger: Ledger
    store: ChunkStore
    balance: BalanceBook
    payer: Payer
    server: PaidChunkServer
    transport: Transport

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    async def link(self, other: BalancePeer) -> HostLink:
        session = await self.transport.connect(other.node_id, "127.0.0.1", other.transport.port)
        return await self.payer.link(session)

    def view(self, other: BalancePeer) -> PeerBalance:
        """Our view of ``other``'s balance as recorded in the ledger."""
        return self.ledger.balance(other.node_id.hex())


def random_chunk(size: int = CHUNK_SIZE) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    return hashlib.sha256(data).digest(), data


def peer_identity(name: str) -> Identity:
    """The identity of the peer named ``name`` (the same in every process)."""
    return Identity(hashlib.sha256(b"balance-peer:" + name.encode()).digest())


@asynccontextmanager
async def open_balance_peer(root: Path, name: str, *, offer: int, terms: BalanceTerms = TEST_TERMS,
                            free_allowance: int = 0) -> AsyncIterator[BalancePeer]:
    root.mkdir(parents=True, exist_ok=True)
    identity = peer_identity(name)
    payee_key = PrivateKey.from_seed(b"balance-payee:" + name.encode())
    signed = Terms(price_per_mib_get=PRICE_PER_MIB_GET, price_per_mib_put=PRICE_PER_MIB_PUT, retention_seconds=86_400,
                   free_allowance=free_allowance, min_capacity=10_000, expiry_window=36, min_confirmations=1, fee_rate=2,
                   payment_pubkey=payee_key.public_key.data, identity_key=identity.public_key,
                   offer=offer).signed(identity)
    with Ledger.open(root / "ledger.sqlite3") as ledger, ChunkStore(root / "store") as store:
        book = PayeeBook(ledger=ledger, terms=signed, payee_key=payee_key, chain=ChainView(Chain()))
        balance = BalanceBook(ledger=ledger, identity=identity, offer=offer, terms=terms)
        payer_key = PrivateKey.from_seed(b"balance-payer:" + name.encode())
        payer = Payer(ledger=ledger, key=payer_key,
                      max_price_per_mib_get=1_000, max_price_per_mib_put=3_000, balance=balance)
        server = PaidChunkServer(store, book, balance=balance)
        async with open_transport(identity, server, payment_key=payee_key.public_key.data,
                                  terms=signed.to_wire()) as transport:
            yield BalancePeer(identity=identity, payer_key=payer_key, payee_key=payee_key, ledger=ledger, store=store, balance=balance, payer=payer,
                              server=server, transport=transport)


def open_channel(payer: BalancePeer, payee: BalancePeer, *, capacity: int = 100_000) -> ChannelId:
    """Record an open channel from ``payer`` to ``payee`` in both ledgers, as if funded and announced."""
    channel = ChannelId(hashlib.sha256(payer.node_id + payee.node_id).digest(), 0)
    params = ChannelParams(funding_outpoint=OutPoint(channel.txid, channel.vout), capacity=capacity,
                           payer=payer.payer_key.public_key, payee=payee.payee_key.public_key,
                           expiry_height=CHANNEL_EXPIRY, fee_rate=2)
    for ledger, role, peer in ((payer.ledger, Role.PAYER, payee), (payee.ledger, Role.PAYEE, payer)):
        ledger.add_channel(ChannelRecord(
            channel_id=str(channel), role=role, peer=peer.node_id.hex(), state=ChannelStatus.OPEN, capacity=capacity,
            total=0, payer_sig=None, funding_txid=channel.txid[::-1].hex(), funding_vout=channel.vout,
            expiry=CHANNEL_EXPIRY, params=params_to_blob(params), opened_at=0.0, updated_at=0.0))
    return channel


async def settled(*peers: BalancePeer) -> None:
    """Wait until every peer's view has the other's acknowledgement of everything it gave and paid."""
    with trio.fail_after(10):
        for me in peers:
            for other in peers:
                while other is not me:
                    view = me.balance.view(other.node_id)
                    if view is None or view.unacknowledged == 0:
                        break
                    await me.balance.acked.wait()
