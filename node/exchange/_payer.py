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
from dataclasses import dataclass, field, replace

import trio

from node.exchange._channels import outpoint_of, params_from_blob, params_to_blob
from node.ledger import ChannelRecord, Ledger
from node.transport import RequestError, Session
from protocol.bitcoin import PrivateKey, PublicKey
from protocol.bitcoin.channel import ChannelParams, PayerChannel, funding_script_for
from protocol.bitcoin.channel import Payment as ChannelPayment
from protocol.bitcoin.errors import BitcoinError
from protocol.payments import (
    LocalPaymentError,
    PaymentErrorCode,
    PeerAccount,
    PriceTooHigh,
    RemotePaymentError,
    Terms,
    chunk_price,
    next_total,
    paid_window,
)
from protocol.payments.messages import ChannelId, ChannelState, OpenChannel, Payment
from protocol.wire import MAX_DATA_SIZE, ChannelMessage, MessageType

# Attempts of one request (a top-up after INSUFFICIENT_PAYMENT, a resync).
MAX_PAYMENT_ROUNDS = 3
DEFAULT_EXPECTED_SIZE = 1 << 20
# Scheduling rounds a request's signer waits after starting it, so that it
# reaches the session's send queue before the next request signs (the
# session takes two to queue it).  Wire order is a speed matter only: the
# payee serves a covered request whose payment arrived late.
_QUEUE_ROUNDS = 3


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
    ahead: ChannelPayment | None = None
    # Paid window (module docstring).  ``account`` is projected: it counts
    # the requests in flight as charged; ``projected`` is the total the host
    # will hold once they are.  ``dirty``: a request failed, resync first.
    projected: int = 0
    inflight: int = 0
    dirty: bool = False
    turn: trio.Lock = field(default_factory=trio.Lock)
    changed: trio.Event = field(default_factory=trio.Event)
    last_record: trio.Event | None = None

    def _settled(self) -> None:
        """One request in flight finished (either way): wake the waiters."""
        self.inflight -= 1
        event, self.changed = self.changed, trio.Event()
        event.set()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self.changed.wait()


class Payer:
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

        ``wallet`` is a ``node.wallet.Wallet``; ``expiry`` an absolute block height.
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
            raise _remote(exc) from None
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
                 price: int) -> tuple[Payment | None, Callable[[], object] | None]:
        """The payment for a request owing ``owed``, and the ledger write to run with it (if new)."""
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
        channel_id, host = str(link.channel_id), link.host.hex()

        def record() -> object:
            return self.ledger.record_payment(
                peer=host, direction="out", kind=kind, chunk=chunk.hex(), price=price, amount=increment,
                channel_id=channel_id, total=signed.total, payer_sig=signed.signature)

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

    @staticmethod
    def _sign_ahead(link: HostLink, total: int) -> None:
        """Sign the payment for ``total`` now, for the next request to use (see ``HostLink.ahead``)."""
        channel = link.channel
        if channel is None or total <= channel.total or total > channel.params.max_total:
            return
        try:
            link.ahead = channel.sign(total)
        except BitcoinError:  # no payment ahead; the next request signs its own
            link.ahead = None

    @staticmethod
    async def _send_with_record(link: HostLink, request: _Prepared, data: bytes | None) -> bytes | bool:
        """Send the request; write our own record of a new payment meanwhile.

        Our record of what we signed is written while the request travels:
        the host's record is the one that must precede serving, and after a
        crash of ours the host's CHANNEL_STATE restores our total
        (specs/payments.md §After a crash).  Both finish before we return;
        records are written in signing order (each waits for the one
        before).  With ``ahead``, the payment for that total is signed while
        the host works, once the request has been handed to the session's
        writer, so the next request does not wait for a signature.
        """
        outcome: list[object] = []
        kind, address, wire, record, ahead = request.kind, request.address, request.wire, request.record, request.ahead

        async def send() -> None:
            try:
                if kind == "get":
                    outcome.append(await link.session.get_chunk(address, wire))
                else:
                    assert data is not None
                    outcome.append(await link.session.put_chunk(address, data, wire))
            except Exception as exc:  # handed back below, outside the nursery
                outcome.append(exc)

        # Both helpers give up one scheduling round first: the session's
        # writer, woken by our request in the same round, seals and writes
        # it before the signature (~0.15 ms of the event loop) or the record
        # thread (which competes for the GIL and a core) gets going.
        async def sign_ahead() -> None:
            assert ahead is not None
            await trio.lowlevel.checkpoint()
            Payer._sign_ahead(link, ahead)

        async def record_mine() -> None:
            assert record is not None and request.recorded is not None
            try:
                await trio.lowlevel.checkpoint()
                if request.after is not None:
                    await request.after.wait()
                await trio.to_thread.run_sync(record)
            finally:
                request.recorded.set()

        if record is None and ahead is None:
            await send()
        else:
            async with trio.open_nursery() as nursery:
                if record is not None:
                    nursery.start_soon(record_mine)
                if ahead is not None:
                    nursery.start_soon(sign_ahead)
                await send()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]  # type: ignore[return-value]

    def _prepare(self, link: HostLink, kind: str, address: bytes, price: int, hint: int | None) -> _Prepared:
        """Sign what a request owes as if those in flight were charged; count it in flight."""
        allowance = link.terms.free_allowance
        redelivery = link.account.is_redelivery(address, kind)
        owed = 0 if redelivery else link.account.owed(price, allowance)
        if hint is not None and not redelivery:
            owed = hint  # the host's word after a refusal of this request sent alone
        before = link.projected
        payment, record = self._payment(link, owed, kind=kind, chunk=address, price=price)
        increment = 0
        if payment is not None:
            increment = max(0, payment.total - before)
            link.projected = max(before, payment.total)
        if not redelivery:
            link.account = link.account.charge(chunk=address, kind=kind, price=price, increment=increment,
                                               allowance=allowance)
        after, recorded = link.last_record, None
        if record is not None:
            recorded = link.last_record = trio.Event()
        link.inflight += 1
        return _Prepared(kind=kind, address=address, price=price, redelivery=redelivery, payment=payment,
                         wire=payment.to_wire() if payment is not None else None, record=record,
                         ahead=payment.total + price if payment is not None and price > 0 else None,
                         after=after, recorded=recorded)

    async def _exchange(self, link: HostLink, request: _Prepared, data: bytes | None, outcome: list[object]) -> None:
        """Send a prepared request and settle it: the answer (or the error) goes to ``outcome``."""
        try:
            try:
                result = await self._send_with_record(link, request, data)
            except BaseException as exc:
                link.dirty = True  # the projection counted it charged: resync before the next one
                if not isinstance(exc, Exception):
                    raise
                outcome.append(exc)
                return
            if request.payment is not None:
                link.acknowledged = max(link.acknowledged, request.payment.total)
            actual = len(result) if isinstance(result, (bytes, bytearray, memoryview)) else None
            if actual is not None and not request.redelivery:
                actual_price = link.terms.get_price(actual) if request.kind == "get" else link.terms.put_price(actual)
                if actual_price != request.price:  # charged by the real size
                    link.account = replace(link.account, consumed=link.account.consumed + actual_price - request.price)
            outcome.append(result)
        finally:
            link._settled()

    async def _attempt(self, link: HostLink, kind: str, address: bytes, data: bytes | None, price: int,
                       hint: int | None) -> tuple[bool, bytes | bool]:
        """One try of a request; returns (sent alone, answer) or raises its error with ``alone`` set."""
        outcome: list[object] = []
        window = paid_window(price, link.terms.free_allowance)
        async with trio.open_nursery() as nursery:
            async with link.turn:  # requests sign and leave in call order
                alone = link.dirty
                if alone:  # after a failure: drain, resync, then go alone (the lock held)
                    await link._until(lambda: link.inflight == 0)
                    if link.channel_id is not None:
                        await self.sync(link)
                    link.dirty = False
                else:
                    await link._until(lambda: link.inflight < window)
                request = self._prepare(link, kind, address, price, hint if alone else None)
                if alone:
                    await self._exchange(link, request, data, outcome)
                else:
                    nursery.start_soon(self._exchange, link, request, data, outcome)
                    for _ in range(_QUEUE_ROUNDS):  # let it reach the send queue first
                        await trio.lowlevel.checkpoint()
        if isinstance(outcome[0], Exception):
            raise _Failed(alone, outcome[0])
        return alone, outcome[0]  # type: ignore[return-value]

    async def _request(self, link: HostLink, kind: str, address: bytes, size: int, data: bytes | None) -> bytes | bool:
        terms = link.terms
        price = terms.get_price(size) if kind == "get" else terms.put_price(size)
        ceiling = chunk_price(MAX_DATA_SIZE, self.max_price_per_mib_get if kind == "get" else self.max_price_per_mib_put)
        hint: int | None = None
        for _ in range(MAX_PAYMENT_ROUNDS):
            try:
                return (await self._attempt(link, kind, address, data, price, hint))[1]
            except _Failed as failed:
                exc = failed.error
                if not isinstance(exc, RequestError):
                    raise exc from None
                code = exc.code
                if code == PaymentErrorCode.INSUFFICIENT_PAYMENT and exc.owed is not None:
                    if exc.owed > ceiling or exc.owed <= 0:
                        raise PriceTooHigh(f"host asks {exc.owed} sats for one chunk; our ceiling is {ceiling}") from None
                    # The host recorded nothing.  Its figure is exact only for
                    # a request that went alone; else recompute after a resync.
                    hint = exc.owed if failed.alone else None
                    continue
                if code in (PaymentErrorCode.PAYMENT_REPLAY, PaymentErrorCode.PAYMENT_TOTAL_LOWER):
                    hint = None  # the next try resynchronises first
                    continue
                raise _remote(exc) from None
        raise RemotePaymentError(PaymentErrorCode.INSUFFICIENT_PAYMENT, "host kept refusing payment")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Prepared:
    """A signed request ready to leave (see ``Payer._prepare``)."""

    kind: str
    address: bytes
    price: int
    redelivery: bool
    payment: Payment | None
    wire: dict[str, object] | None
    record: Callable[[], object] | None
    ahead: int | None
    after: trio.Event | None  # the previous payment record, written before ours
    recorded: trio.Event | None  # set once ours is written (or failed)


class _Failed(Exception):
    """A request's error, with whether it was sent alone (nothing else in flight)."""

    def __init__(self, alone: bool, error: Exception) -> None:
        super().__init__(str(error))
        self.alone = alone
        self.error = error


def _remote(exc: RequestError) -> Exception:
    """The payer-side error for an ERROR reply."""
    try:
        code = PaymentErrorCode(exc.code if exc.code is not None else -1)
    except ValueError:
        return exc  # not a payment refusal (NOT_FOUND, OVER_QUOTA...): the transport error as is
    return RemotePaymentError(code, str(exc), owed=exc.owed)
