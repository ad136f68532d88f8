"""Paying hosts during network operations (specs/network.md §4, §7; specs/payments.md).

``PaidPeers`` wraps the paid exchange's :class:`node.exchange.Payer` for
the fetcher and the uploader: one :class:`node.exchange.HostLink` per host,
one paid request at a time per host (the payer's accounting mirrors the
host's request by request), and a channel opened on demand the first time a
host asks for payment past its free allowance: funded from the node's
wallet, waited for until it has the confirmations the host's terms require,
then announced.  Fundings are serialised, so each one sees the wallet's
confirmed coins only.
"""

from __future__ import annotations

import logging

import trio

from node.exchange import HostLink, Payer
from node.bitcoin.rpc import RPCClient
from node.transport import BadChunk, RequestError, Session, TransportError
from node.bitcoin.wallet import Wallet
from protocol.payments import Kind, PaymentError, PaymentErrorCode, PriceTooHigh

log = logging.getLogger("mu.paying")

DEFAULT_CHANNEL_CAPACITY = 2_000_000  # sats per channel opened on demand
DEFAULT_EXPIRY_BLOCKS = 1_008  # about a week of blocks
CONFIRM_TIMEOUT = 120.0  # seconds to wait for a funding output's confirmations
CONFIRM_POLL = 0.25


class PaidBadChunk(BadChunk):
    """A host answered a paid GET with bytes that are not the chunk; ``paid`` sats went with the request."""

    def __init__(self, message: str, paid: int) -> None:
        super().__init__(message)
        self.paid = paid


class PaidPeers:
    """Paid GET and PUT to many hosts, opening channels as needed."""

    def __init__(self, payer: Payer, wallet: Wallet, rpc: RPCClient, *,
                 capacity: int = DEFAULT_CHANNEL_CAPACITY, expiry_blocks: int = DEFAULT_EXPIRY_BLOCKS) -> None:
        self.payer = payer
        self.wallet = wallet
        self.rpc = rpc
        self.capacity = capacity
        self.expiry_blocks = expiry_blocks
        self._links: dict[bytes, HostLink] = {}
        self._locks: dict[bytes, trio.Lock] = {}
        self._funding = trio.Lock()

    async def link(self, session: Session) -> HostLink:
        """The host link for ``session``'s peer (terms verified; PriceTooHigh above our maximum)."""
        host = session.peer_node_id
        lock = self._locks.setdefault(host, trio.Lock())
        async with lock:
            link = self._links.get(host)
            if link is None or link.session is not session:
                link = await self.payer.link(session)
                self._links[host] = link
            return link

    async def _open_channel(self, link: HostLink) -> None:
        async with self._funding:
            tip = int(await self.rpc.call("getblockcount"))
            capacity = max(self.capacity, link.terms.min_capacity)
            expiry = tip + max(self.expiry_blocks, link.terms.expiry_window + 6)
            channel = await self.payer.fund_channel(link, self.wallet, capacity=capacity, expiry=expiry)
            txid = bytes(reversed(channel.txid)).hex()
            log.info("funded channel %s to %s (%d sats)", channel, link.host.hex(), capacity)
            with trio.fail_after(CONFIRM_TIMEOUT):
                while True:
                    out = await self.rpc.call("gettxout", txid, channel.vout)
                    if out and int(out.get("confirmations", 0)) >= max(1, link.terms.min_confirmations):
                        break
                    await trio.sleep(CONFIRM_POLL)  # waiting for the chain, bounded by fail_after
        await self.payer.announce(link)

    async def request(self, session: Session, kind: Kind, address: bytes, data: bytes | None = None) -> tuple[object, int]:
        """One paid GET or PUT; returns (reply, sats sent with it).

        With a free allowance of one chunk's price, what goes with a request
        pays for the one before it (specs/payments.md §Accounting).

        Raises:
            PaidBadChunk: the reply's bytes are not the chunk (``paid`` went with it).
        """
        link = await self.link(session)
        async with self._locks[link.host]:
            before = link.paid
            try:
                try:
                    return await self._once(link, kind, address, data), link.paid - before
                except PaymentError as exc:
                    if exc.code != PaymentErrorCode.INSUFFICIENT_PAYMENT or link.channel is not None:
                        raise
                await self._open_channel(link)
                return await self._once(link, kind, address, data), link.paid - before
            except BadChunk as exc:
                raise PaidBadChunk(str(exc), paid=link.paid - before) from None

    async def _once(self, link: HostLink, kind: Kind, address: bytes, data: bytes | None) -> object:
        if kind is Kind.GET:
            return await self.payer.get(link, address)
        assert data is not None
        return await self.payer.put(link, address, data)

    async def put(self, session: Session, address: bytes, data: bytes) -> None:
        """Store a chunk on the host, paying its storage price (for the uploader)."""
        await self.request(session, Kind.PUT, address, data)
