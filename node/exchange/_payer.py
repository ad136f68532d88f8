"""The payer (fetcher / uploader) side of the paid exchange.

``Payer`` opens channels (funding them through the wallet), links to hosts
(verifying their terms, restoring our open channel to them and
resynchronising: CHANNEL_STATE, never sign below the host's total) and
pays for each GET or PUT with the smallest increment the accounting rule
asks for, never more than one chunk's price at the configured maximum
price (specs/payments.md §Accounting, §After a crash).  The rules of one
link are the pure ``protocol.payments.payer.PayerLink``; ``Payer`` owns a
``PaidWindow`` that sends the requests (specs/payments.md §Paid window).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from collections.abc import Callable

import trio

from node.exchange._balance import BalanceBook, balanced_request
from node.exchange._channels import outpoint_of, params_from_blob, params_to_blob
from node.exchange._link import HostLink, PaymentJournal, channel_request, give_up_channel, sync
from node.exchange._window import Body, Paid, PaidWindow, RenewalPut, Tally
from node.ledger import ChannelRecord, Ledger
from node.transport import Session
from protocol.bitcoin import PrivateKey, PublicKey
from protocol.bitcoin.channel import ChannelParams, PayerChannel, funding_script_for
from protocol.erasure import AuditChallenge
from protocol.payments import (ChannelStatus, Kind, LocalPaymentError, PaymentErrorCode, PriceTooHigh,
                               RemotePaymentError, Role, Terms)
from protocol.payments.messages import ChannelId, ChannelState, OpenChannel
from protocol.payments.payer import PayerLink, channel_refused
from protocol.wire import MAX_DATA_SIZE, MessageType

DEFAULT_EXPECTED_SIZE = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class FundedChannel:
    """A channel whose funding was sent and recorded, not yet any link's (``Payer.take``)."""

    channel_id: ChannelId
    params: ChannelParams


class Payer:
    """Pays hosts for chunks.  ``key`` is the payer's channel key."""

    def __init__(self, *, ledger: Ledger, key: PrivateKey, max_price_per_mib_get: int,
                 max_price_per_mib_put: int, clock: Callable[[], float] = time.time,
                 balance: BalanceBook | None = None) -> None:
        self.ledger = ledger
        self.balance = balance  # hosts in balance mode are not paid per request (specs/payments.md §Service balance)
        self.key = key
        self.max_price_per_mib_get = max_price_per_mib_get
        self.max_price_per_mib_put = max_price_per_mib_put
        self._clock = clock
        self.window = PaidWindow(max_price_per_mib_get=max_price_per_mib_get,
                                 max_price_per_mib_put=max_price_per_mib_put)
        # The last link made over each open session (``link``).
        self._last_links: dict[Session, HostLink] = {}

    # -- links and channels ----------------------------------------------------

    async def link(self, session: Session, *, unannounced: ChannelId | None = None) -> HostLink:
        """Verify the host's terms and load (and resync) our open channel to it.

        A channel the host no longer takes payments on (it forgot it,
        closed it, it is past its deadline) is given up: the link starts
        without a channel and the next paid request needs a new one.
        ``unannounced`` is a channel we funded and have not announced yet
        (the host does not know it): it is not resynchronised.

        A link made again over a session that already has one (to pick up a
        channel opened meanwhile) resynchronises as ``sync`` does within a
        session, not as a new session: it takes back nothing while a
        payment of the earlier link is unanswered or in flight.  A session's
        messages are handled concurrently, so the host may answer its
        CHANNEL_STATE before it records a one-way balance payment sent just
        before (specs/payments.md §After a crash).

        Raises:
            LocalPaymentError(BAD_TERMS): the terms are missing or not signed.
            PriceTooHigh: the host asks more than our maximum prices.
        """
        hello = session.peer_hello
        terms = Terms.from_wire(hello.terms, hello.identity_key)
        if terms.payment_pubkey != hello.payment_key:
            raise LocalPaymentError(PaymentErrorCode.BAD_TERMS, "HELLO and terms name different payment keys")
        if terms.price_per_mib_get > self.max_price_per_mib_get or terms.price_per_mib_put > self.max_price_per_mib_put:
            raise PriceTooHigh(
                f"host asks {terms.price_per_mib_get}/{terms.price_per_mib_put} sats per MiB (get/put), "
                f"above our maximum {self.max_price_per_mib_get}/{self.max_price_per_mib_put}")
        host = session.peer_node_id
        records = await trio.to_thread.run_sync(
            lambda: self.ledger.channels(peer=host.hex(), role=Role.PAYER, states=(ChannelStatus.OPEN,)))
        usable = [r for r in records if params_from_blob(r.params).payee.data == terms.payment_pubkey]
        if usable:
            record = usable[-1]
            channel = PayerChannel(params_from_blob(record.params), self.key, record.total)
            machine = PayerLink(terms=terms, channel=channel, channel_id=ChannelId.parse(record.channel_id),
                                last_sig=record.payer_sig)
        else:
            machine = PayerLink(terms=terms)
        before = self._last_links.get(session)
        if before is not None:
            machine.unanswered = before.machine.unanswered or before.machine.inflight > 0
        link = HostLink(session=session, host=host, machine=machine, journal=PaymentJournal(self.ledger))
        for closed in [s for s in self._last_links if not s.is_open]:
            del self._last_links[closed]
        self._last_links[session] = link
        if self.balance is not None:
            await self.balance.greet(session)  # our acknowledgement first (§Service balance, rule 6)
        if usable and machine.channel_id != unannounced:
            try:
                await sync(link, new_session=before is None)
            except RemotePaymentError as exc:
                if not channel_refused(exc.code):
                    raise
                # The host forgot the channel or closed it: link without one
                # (specs/payments.md §Channel recovery).
                async with link.turn:
                    await give_up_channel(link, ask_host=False)
        return link

    async def fund_channel(self, link: HostLink, wallet: object, *, capacity: int, expiry: int) -> ChannelId:
        """Fund a channel output to ``link``'s host, persist it and give it to the link (not yet announced).

        ``wallet`` is a ``node.bitcoin.wallet.Wallet``; ``expiry`` an absolute block height.
        Call ``announce`` once the funding has the host's required confirmations.
        """
        funded = await self.fund(link, wallet, capacity=capacity, expiry=expiry)
        self.take(link, funded)
        return funded.channel_id

    async def fund(self, link: HostLink, wallet: object, *, capacity: int, expiry: int) -> FundedChannel:
        """Send the funding of a channel to ``link``'s host and persist the channel; the link is left as it was.

        Until ``take`` gives it to a link no request signs on it (specs/payments.md §Channel
        recovery, "Funding ahead").
        """
        [funded] = await self.fund_many([(link, capacity, expiry)], wallet)
        return funded

    async def fund_many(self, orders: list[tuple[HostLink, int, int]], wallet: object) -> list[FundedChannel]:
        """Fund one channel per ``(link, capacity, expiry)`` in one transaction and persist each, in order.

        ``wallet`` is a ``node.bitcoin.wallet.Wallet``; ``expiry`` an absolute block height.  The
        links are left as they were (``take``).  Call ``announce`` once the funding has the host's
        required confirmations.
        """
        planned = []
        for link, capacity, expiry in orders:
            payee = PublicKey(link.terms.payment_pubkey)
            planned.append((link, capacity, expiry, payee, funding_script_for(self.key.public_key, payee, expiry)))
        txid_hex, vouts = await wallet.fund_channels(  # type: ignore[attr-defined]
            [(script, capacity) for _, capacity, _, _, script in planned])
        funded, records = [], []
        now = self._clock()
        for (link, capacity, expiry, payee, _), vout in zip(planned, vouts):
            channel = ChannelId(bytes.fromhex(txid_hex)[::-1], vout)
            params = ChannelParams(funding_outpoint=outpoint_of(channel), capacity=capacity,
                                   payer=self.key.public_key, payee=payee, expiry_height=expiry,
                                   fee_rate=link.terms.fee_rate)
            records.append(ChannelRecord(
                channel_id=str(channel), role=Role.PAYER, peer=link.host.hex(), state=ChannelStatus.OPEN,
                capacity=capacity, total=0, payer_sig=None, funding_txid=txid_hex, funding_vout=vout, expiry=expiry,
                params=params_to_blob(params), opened_at=now, updated_at=now))
            funded.append(FundedChannel(channel_id=channel, params=params))

        await trio.to_thread.run_sync(self.ledger.add_channels, records)
        return funded

    def take(self, link: HostLink, funded: FundedChannel) -> None:
        """Make ``funded`` the link's channel: its next payments sign on it (announce it first)."""
        link.machine.opened(PayerChannel(funded.params, self.key), funded.channel_id)

    async def announce(self, link: HostLink) -> ChannelState:
        """Send OPEN_CHANNEL for the funded channel; adopt the host's state.

        Raises:
            RemotePaymentError: the host refused (e.g. FUNDING_UNCONFIRMED).
        """
        assert link.channel is not None and link.channel_id is not None, "fund a channel first"
        params = link.channel.params
        request = OpenChannel(channel=link.channel_id, capacity=params.capacity, expiry=params.expiry_height,
                              payer_pubkey=self.key.public_key.data)
        reply = await channel_request(link, MessageType.OPEN_CHANNEL, request.to_wire(), MessageType.CHANNEL_ACCEPTED)
        return link.machine.adopt(reply)

    async def sync(self, link: HostLink) -> ChannelState:
        """Ask the host what it recorded (CHANNEL_STATE) and adopt it."""
        return await sync(link)

    async def balance_due(self, link: HostLink) -> int:
        """In balance mode, what we owe the host and must pay now (§Service balance, rule 3); else 0."""
        if self.balance is None or not self.balance.active(link.session):
            return 0
        return await self.balance.due(link.host)

    async def settle_balance(self, link: HostLink) -> int:
        """In balance mode, pay the host what is due through the link's channel; the sats paid."""
        if self.balance is None or not self.balance.active(link.session):
            return 0
        return await self.balance.settle(link)

    async def request(self, link: HostLink, kind: Kind, address: bytes, data: Body = None, *,
                      size: int | None = None, tally: Tally | None = None) -> Paid:
        """One paid request: its answer and the sats its own payments signed.

        A GET is priced at ``size`` (``DEFAULT_EXPECTED_SIZE`` when unknown);
        a PUT's ``data`` is the chunk; a RENEW's a ``RenewalPut`` and
        ``address`` the renewal's id (32 fresh random bytes, so that it is
        never taken for a redelivery of the chunk's PUT); an AUDIT's its
        challenge, ``address`` its nonce (specs/erasure.md §7.4 Paid audits).
        ``tally`` counts its payments as they are signed (a request in
        balance mode signs none: §Service balance).

        Raises:
            RemotePaymentError: the host refused the payment or the channel.
            PriceTooHigh: the host asked more than one chunk at our maximum price.
            PaidBadChunk: a GET's answer is not the chunk.
            node.transport errors: the session failed (the caller reconnects).
        """
        if kind is Kind.GET:
            priced = DEFAULT_EXPECTED_SIZE if size is None else size
        elif kind is Kind.AUDIT:
            assert isinstance(data, AuditChallenge)
            priced = data.length
        elif kind is Kind.RENEW:
            assert isinstance(data, RenewalPut)
            priced = len(data.data)
        else:
            assert isinstance(data, bytes)
            priced = len(data)
        if self.balance is not None and self.balance.active(link.session):
            return await balanced_request(self.balance, link, kind, address, priced, data)
        # A GET of unknown size may be any chunk up to the wire's largest: its retry is priced at that.
        largest = MAX_DATA_SIZE if kind is Kind.GET and size is None else None
        return await self.window.request(link, kind, address, priced, data, tally, largest=largest)

    async def get(self, link: HostLink, address: bytes, *, expected_size: int = DEFAULT_EXPECTED_SIZE) -> bytes:
        """Fetch ``address`` from the host, paying what is owed (see ``request``)."""
        return (await self.request(link, Kind.GET, address, size=expected_size)).answer  # type: ignore[return-value]

    async def put(self, link: HostLink, address: bytes, data: bytes) -> bool:
        """Store ``data`` on the host, paying what is owed; True if it was new there."""
        return (await self.request(link, Kind.PUT, address, data)).answer  # type: ignore[return-value]

    async def renew(self, link: HostLink, renewal: bytes, address: bytes, data: bytes) -> bool:
        """Renew the host's retention of a chunk it holds: a PUT charged as kind renew, named ``renewal``."""
        return (await self.request(link, Kind.RENEW, renewal,  # type: ignore[return-value]
                                   RenewalPut(address=address, data=data))).answer

    async def audit(self, link: HostLink, challenge: AuditChallenge) -> bytes:
        """Pay for an audit whose probe's proof checked: the charged AUDIT; returns its proof again
        (specs/erasure.md §7.4 Paid audits)."""
        return (await self.request(link, Kind.AUDIT, challenge.nonce, challenge)).answer  # type: ignore[return-value]
