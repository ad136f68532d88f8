"""The payer (fetcher / uploader) side of the paid exchange.

A ``HostLink`` is the payer's view of one host over one session: the host's
verified terms, the payer channel to it, the last total the host
acknowledged and the payer's mirror of the host's account.  ``Payer``
opens channels (funding them through the wallet), resynchronises after a
reconnect (CHANNEL_STATE: never sign below the host's total), and pays for
each GET or PUT with the smallest increment the accounting rule asks for,
never more than one chunk's price at the configured maximum price
(specs/payments.md §Accounting, §After a crash).

Paid window: ``get`` and ``put`` may be called concurrently on one link.
Up to ``paid_window(price, free_allowance)`` requests are then in flight,
each signed (in call order, and handed to the session in that order) with
the increment it owes as if the ones before it were already charged, so
what the payer has paid for and not received stays within one request's
price.  A request that fails marks the link: the next one waits for the
window to drain, resynchronises (CHANNEL_STATE) and goes alone
(specs/payments.md §Paid window).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from node.exchange._channels import outpoint_of, params_from_blob, params_to_blob
from node.exchange._window import PaidRequests, PendingRecord, remote_error
from node.ledger import ChannelRecord, Ledger
from node.transport import RequestError, Session
from protocol.bitcoin import PrivateKey, PublicKey
from protocol.bitcoin.channel import ChannelParams, PayerChannel, funding_script_for
from protocol.bitcoin.channel import SignedCommitment
from protocol.payments import (
    LocalPaymentError,
    PaymentErrorCode,
    PeerAccount,
    PriceTooHigh,
    RemotePaymentError,
    Terms,
    next_total,
)
from protocol.payments.messages import ChannelId, ChannelState, OpenChannel, Payment
from protocol.wire import ChannelMessage, MessageType

DEFAULT_EXPECTED_SIZE = 1 << 20


@dataclass(slots=True)
class HostLink:
    """The payer's state with one host (see module docstring)."""

    session: Session
    host: bytes
    terms: Terms
    channel: PayerChannel | None = None
    channel_id: ChannelId | None = None
    last_sig: bytes | None = None  # signature of channel.total
    acknowledged: int = 0
    account: PeerAccount = PeerAccount()
    paid: int = 0  # sats signed over this link's lifetime (for reports and tests)
    # The likely next payment, signed while the current request was in
    # flight; used only if the next request owes exactly its total, never
    # sent otherwise (in memory only: nothing is paid until it leaves).
    ahead: SignedCommitment | None = None
    # Paid window (module docstring).  ``account`` is projected: it counts
    # the requests in flight as charged; ``projected`` is the total the host
    # will hold once they are.  ``dirty``: a request failed, resync first.
    projected: int = 0
    inflight: int = 0
    dirty: bool = False
    turn: trio.Lock = field(default_factory=trio.Lock)
    changed: trio.Event = field(default_factory=trio.Event)
    # Our payment records not yet written, in signing order, and the write
    # under way (``Payer._write_records``).
    unrecorded: list[tuple[dict[str, object], PendingRecord]] = field(default_factory=list)
    writing: trio.Event | None = None

    def _settled(self) -> None:
        """One request in flight finished (either way): wake the waiters."""
        self.inflight -= 1
        event, self.changed = self.changed, trio.Event()
        event.set()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self.changed.wait()


class Payer(PaidRequests):
    """Pays hosts for chunks.  ``key`` is the payer's channel key."""

    def __init__(self, *, ledger: Ledger, key: PrivateKey, max_price_per_mib_get: int,
                 max_price_per_mib_put: int, clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.key = key
        self.max_price_per_mib_get = max_price_per_mib_get
        self.max_price_per_mib_put = max_price_per_mib_put
        self._clock = clock

    # -- links and channels ----------------------------------------------------

    async def link(self, session: Session) -> HostLink:
        """Verify the host's terms and load (and resync) our open channel to it.

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
        link = HostLink(session=session, host=session.peer_node_id, terms=terms)
        records = await trio.to_thread.run_sync(
            lambda: self.ledger.channels(peer=link.host.hex(), role="payer", states=("open",)))
        usable = [r for r in records if params_from_blob(r.params).payee.data == terms.payment_pubkey]
        if usable:
            record = usable[-1]
            params = params_from_blob(record.params)
            link.channel = PayerChannel(params, self.key, record.total)
            link.channel_id = ChannelId.parse(record.channel_id)
            link.last_sig = record.payer_sig
            link.acknowledged = link.projected = record.total
            await self.sync(link)
        return link

    async def fund_channel(self, link: HostLink, wallet: object, *, capacity: int, expiry: int) -> ChannelId:
        """Fund a channel output to ``link``'s host and persist the channel (not yet announced).

        ``wallet`` is a ``node.bitcoin.wallet.Wallet``; ``expiry`` an absolute block height.
        Call ``announce`` once the funding has the host's required confirmations.
        """
        payee = PublicKey(link.terms.payment_pubkey)
        script = funding_script_for(self.key.public_key, payee, expiry)
        txid_hex, vout = await wallet.fund_channel(script, capacity)  # type: ignore[attr-defined]
        channel = ChannelId(bytes.fromhex(txid_hex)[::-1], vout)
        params = ChannelParams(funding_outpoint=outpoint_of(channel), capacity=capacity, payer=self.key.public_key,
                               payee=payee, expiry_height=expiry, fee_rate=link.terms.fee_rate)
        now = self._clock()
        await trio.to_thread.run_sync(self.ledger.add_channel, ChannelRecord(
            channel_id=str(channel), role="payer", peer=link.host.hex(), state="open", capacity=capacity, total=0,
            payer_sig=None, funding_txid=txid_hex, funding_vout=vout, expiry=expiry, params=params_to_blob(params),
            opened_at=now, updated_at=now))
        link.channel = PayerChannel(params, self.key)
        link.channel_id = channel
        link.last_sig = None
        link.ahead = None
        link.acknowledged = link.projected = 0
        return channel

    async def announce(self, link: HostLink) -> ChannelState:
        """Send OPEN_CHANNEL for the funded channel; adopt the host's state.

        Raises:
            RemotePaymentError: the host refused (e.g. FUNDING_UNCONFIRMED).
        """
        assert link.channel is not None and link.channel_id is not None, "fund a channel first"
        params = link.channel.params
        request = OpenChannel(channel=link.channel_id, capacity=params.capacity, expiry=params.expiry_height,
                              payer_pubkey=self.key.public_key.data)
        reply = await self._channel_request(link, MessageType.OPEN_CHANNEL, request.to_wire(), MessageType.CHANNEL_ACCEPTED)
        return self._adopt(link, reply)

    async def sync(self, link: HostLink) -> ChannelState:
        """Ask the host what it recorded (CHANNEL_STATE) and adopt it."""
        assert link.channel_id is not None
        reply = await self._channel_request(
            link, MessageType.CHANNEL_STATE, {"channel": link.channel_id.to_bytes()}, MessageType.CHANNEL_STATE)
        return self._adopt(link, reply)

    async def _channel_request(self, link: HostLink, kind: MessageType, fields: dict[str, object],
                               expected: MessageType) -> ChannelState:
        try:
            reply = await link.session.request(ChannelMessage(request_id=0, type=kind, fields=fields))
        except RequestError as exc:
            raise remote_error(exc) from None
        if not isinstance(reply, ChannelMessage) or reply.type != expected:
            raise RemotePaymentError(PaymentErrorCode.BAD_PAYMENT, f"host answered {kind.name} with {type(reply).__name__}")
        return ChannelState.from_wire(reply.fields)

    def _adopt(self, link: HostLink, state: ChannelState) -> ChannelState:
        assert link.channel is not None
        if state.channel != link.channel_id:
            raise RemotePaymentError(PaymentErrorCode.BAD_PAYMENT, "host reported another channel")
        if state.total > link.channel.params.max_total:
            raise RemotePaymentError(PaymentErrorCode.BAD_PAYMENT, "host reports a total beyond capacity")
        if state.total > link.channel.total:
            # We lost a signed payment (our ledger is older): never sign below it.
            link.channel.total = state.total
            link.last_sig = None
        link.acknowledged = link.projected = state.total
        link.account = PeerAccount(consumed=state.consumed, paid=state.paid, last_chunk=state.last_chunk,
                                   last_kind=state.last_kind, recent=state.recent)
        return state

    # -- paid requests ---------------------------------------------------------

    def _payment(self, link: HostLink, owed: int, *, kind: str, chunk: bytes,
                 price: int) -> tuple[Payment | None, dict[str, object] | None]:
        """The payment for a request owing ``owed``, and our ledger entry for it (if new)."""
        if owed == 0:
            return None, None
        if link.channel is None or link.channel_id is None:
            raise RemotePaymentError(PaymentErrorCode.INSUFFICIENT_PAYMENT, "payment owed but no channel open", owed=owed)
        total = next_total(owed=owed, acknowledged_total=link.projected, signed_total=link.channel.total)
        assert total is not None
        if total == link.channel.total and link.last_sig is not None:
            return Payment(channel=link.channel_id, total=total, sig=link.last_sig), None  # re-send, never re-pay
        increment = total - link.channel.total
        ahead, link.ahead = link.ahead, None
        if ahead is not None and ahead.total == total and total > link.channel.total:
            signed = link.channel.adopt(ahead)  # signed while the previous chunk was in flight
        else:
            signed = link.channel.pay(increment)
        link.last_sig = signed.signature
        link.paid += increment
        record = {"peer": link.host.hex(), "direction": "out", "kind": kind, "chunk": chunk.hex(), "price": price,
                  "amount": increment, "channel_id": str(link.channel_id), "total": signed.total,
                  "payer_sig": signed.signature}
        return Payment(channel=link.channel_id, total=signed.total, sig=signed.signature), record

    async def get(self, link: HostLink, address: bytes, *, expected_size: int = DEFAULT_EXPECTED_SIZE) -> bytes:
        """Fetch ``address`` from the host, paying what is owed.

        Raises:
            RemotePaymentError: the host refused the payment or the channel.
            PriceTooHigh: the host asked more than one chunk at our maximum price.
            node.transport errors: the session failed (the caller reconnects).
        """
        return await self._request(link, "get", address, expected_size, None)  # type: ignore[return-value]

    async def put(self, link: HostLink, address: bytes, data: bytes) -> bool:
        """Store ``data`` on the host, paying what is owed; True if it was new there."""
        return await self._request(link, "put", address, len(data), data)  # type: ignore[return-value]
