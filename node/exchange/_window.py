"""Paid requests in a window: the payer side of specs/payments.md §Paid window.

``PaidRequests`` is the half of ``Payer`` that sends GET and PUT: up to
``paid_window(price, free_allowance)`` requests of one link are in flight
at once.  Each is signed in call order under the link's ``turn`` lock with
the increment it owes as if the ones before it were already charged (the
link's account is projected), handed to the session before the next one
signs, and settled when its answer comes (and our record of it is
written): a failure marks the link, and
the next request waits for the window to drain, resynchronises
(CHANNEL_STATE) and goes alone.  Exposure: with ``W`` requests in flight
each paying the least it owes, the payer has paid for at most ``W * price
- free_allowance <= price`` it has not received.

Two ways a request travels.  In a window above one, each request runs in
its caller's task (``_attempt_in_window``): the callers are the window,
and no task, nursery or scheduling round is added per request.  One
request at a time (a window of one) is latency-bound instead: helper
tasks sign the likely next payment ahead and write our record while the
request travels (``_send_with_record``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import trio

from node.ledger import Ledger
from node.transport import RequestError
from protocol.bitcoin.errors import BitcoinError
from protocol.payments import (
    PaymentErrorCode,
    PriceTooHigh,
    RemotePaymentError,
    chunk_price,
    paid_window,
)
from protocol.payments.messages import Payment
from protocol.wire import MAX_DATA_SIZE

if TYPE_CHECKING:
    from node.exchange._payer import HostLink

# Attempts of one request (a top-up after INSUFFICIENT_PAYMENT, a resync).
MAX_PAYMENT_ROUNDS = 3
# Scheduling rounds a request's signer waits after starting it, so that it
# reaches the session's send queue before the next request signs (the
# session takes two to queue it).  Wire order is a speed matter only: the
# payee serves a covered request whose payment arrived late.
_QUEUE_ROUNDS = 3


class PaidRequests:
    """Sending paid GET and PUT (mixed into ``Payer``; see the module docstring)."""

    # Provided by ``Payer``, with ``_payment`` (sign what is owed) and
    # ``sync`` (CHANNEL_STATE).
    ledger: Ledger
    max_price_per_mib_get: int
    max_price_per_mib_put: int

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

    async def _send_with_record(self, link: HostLink, request: _Prepared, data: bytes | None) -> bytes | bool:
        """Send the request; have our own record of a new payment written by the time it returns.

        The host's record is the one that must precede serving; ours says
        what we signed, and after a crash of ours the host's CHANNEL_STATE
        restores our total (specs/payments.md §After a crash).  Our records
        are written while the request travels, in signing order; those
        signed while a write is under way go together in the next one.
        With ``ahead``, the payment for that total is signed while the host
        works, once the request has been handed to the session's writer, so
        the next request does not wait for a signature.
        """
        outcome: list[object] = []
        kind, address, wire, ahead = request.kind, request.address, request.wire, request.ahead

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
            PaidRequests._sign_ahead(link, ahead)

        async def record_mine() -> None:
            assert request.record is not None
            await trio.lowlevel.checkpoint()
            await self._write_records(link, request.record)

        if request.record is None and ahead is None:
            await send()
        else:
            async with trio.open_nursery() as nursery:
                if request.record is not None:
                    nursery.start_soon(record_mine)
                if ahead is not None:
                    nursery.start_soon(sign_ahead)
                await send()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]  # type: ignore[return-value]

    async def _write_records(self, link: HostLink, mine: PendingRecord) -> None:
        """Return once ``mine`` is written: write every pending record of the link, or wait for the write under way."""
        while not mine.done.is_set():
            if link.writing is not None:
                await link.writing.wait()
                continue
            batch, link.unrecorded = link.unrecorded, []
            link.writing = writing = trio.Event()
            results: list[object] = []
            try:
                results = list(await trio.to_thread.run_sync(self.ledger.record_payments, [e for e, _ in batch]))
            except Exception as exc:  # every record of the batch failed with it
                results = [exc] * len(batch)
                if isinstance(exc, sqlite3.OperationalError):
                    # Nothing of it is on disk (a full disk, an I/O error): the
                    # payments may have left, so the next write tries them
                    # again, first (signing order).  Their requests fail now.
                    link.unrecorded[:0] = batch
            finally:
                for (_, slot), result in zip(batch, results or [RuntimeError("record interrupted")] * len(batch)):
                    slot.error = result if isinstance(result, Exception) else None
                    slot.done.set()
                link.writing = None
                writing.set()
        if mine.error is not None:
            raise mine.error

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
        slot = None
        if record is not None:
            slot = PendingRecord()
            link.unrecorded.append((record, slot))
        link.inflight += 1
        return _Prepared(kind=kind, address=address, price=price, redelivery=redelivery, payment=payment,
                         wire=payment.to_wire() if payment is not None else None, record=slot,
                         ahead=payment.total + price if payment is not None and price > 0 else None)

    async def _exchange(self, link: HostLink, request: _Prepared, data: bytes | None, outcome: list[object]) -> None:
        """Send a prepared request and settle it: the answer (or the error) goes to ``outcome``."""
        try:
            try:
                result = await self._send_with_record(link, request, data)
            except BaseException as exc:
                self._failed(link, request)
                if not isinstance(exc, Exception):
                    raise
                outcome.append(exc)
                return
            self._answered(link, request, result)
            outcome.append(result)
        finally:
            link._settled()

    @staticmethod
    def _failed(link: HostLink, request: _Prepared) -> None:
        """A request in flight failed: resynchronise before the next one."""
        link.dirty = True  # the projection counted it charged
        if link.channel_id is None and request.payment is None and not request.redelivery:
            # No channel to resync from: take back what the projection
            # counted (the payee charges nothing it does not serve but
            # a chunk lost after its charge, and then says what is owed).
            link.account = replace(link.account, consumed=link.account.consumed - request.price)

    @staticmethod
    def _answered(link: HostLink, request: _Prepared, result: object) -> None:
        """A request was answered: the host holds its payment; charge by the real size."""
        if request.payment is not None:
            link.acknowledged = max(link.acknowledged, request.payment.total)
        actual = len(result) if isinstance(result, (bytes, bytearray, memoryview)) else None
        if actual is not None and not request.redelivery:
            actual_price = link.terms.get_price(actual) if request.kind == "get" else link.terms.put_price(actual)
            if actual_price != request.price:  # charged by the real size
                link.account = replace(link.account, consumed=link.account.consumed + actual_price - request.price)

    async def _attempt(self, link: HostLink, kind: str, address: bytes, data: bytes | None, price: int,
                       hint: int | None) -> tuple[bool, bytes | bool]:
        """One try of a request; returns (sent alone, answer) or raises its error with ``alone`` set."""
        window = paid_window(price, link.terms.free_allowance)
        if window > 1:
            return await self._attempt_in_window(link, kind, address, data, price, hint, window)
        outcome: list[object] = []
        refusal: Exception | None = None  # raised here, not wrapped in the nursery's group
        async with trio.open_nursery() as nursery:
            try:
                async with link.turn:  # requests sign and leave in call order
                    alone = await self._take_turn(link, window)
                    request = self._prepare(link, kind, address, price, hint if alone else None)
                    if alone:
                        await self._exchange(link, request, data, outcome)
                    else:
                        nursery.start_soon(self._exchange, link, request, data, outcome)
                        for _ in range(_QUEUE_ROUNDS):  # let it reach the send queue first
                            await trio.lowlevel.checkpoint()
            except Exception as exc:  # no payment owed without a channel, a failed resync...
                refusal = exc
        if refusal is not None:
            raise refusal
        if isinstance(outcome[0], Exception):
            raise _Failed(alone, outcome[0])
        return alone, outcome[0]  # type: ignore[return-value]

    async def _attempt_in_window(self, link: HostLink, kind: str, address: bytes, data: bytes | None, price: int,
                                 hint: int | None, window: int) -> tuple[bool, bytes | bool]:
        """``_attempt`` when the window is above one: the request runs in the caller's task.

        The callers are the window: each signs under ``turn`` (inline, no
        payment signed ahead), puts its request in the session's send queue
        and lets ``turn`` go, so requests still sign and leave in call
        order, with no task, nursery or scheduling round of their own.  Our
        record is written while the request travels (``Session.request``'s
        ``meanwhile``) and before the request returns, with any signed
        while a write was under way.  After a failure the request goes
        alone: ``turn`` is held until its answer.
        """
        turn = link.turn
        await turn.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                turn.release()

        try:
            alone = await self._take_turn(link, window)
            request = self._prepare(link, kind, address, price, hint if alone else None)
            record = request.record
            record_error: list[Exception] = []

            async def write_record() -> None:
                assert record is not None
                try:
                    await self._write_records(link, record)
                except Exception as exc:  # the payment may have left: the answer is still awaited
                    record_error.append(exc)

            async def meanwhile() -> None:
                if not alone:
                    release()
                if record is not None:
                    await write_record()

            failure: BaseException | None = None
            result: bytes | bool = b""
            try:
                if kind == "get":
                    result = await link.session.get_chunk(address, request.wire, meanwhile=meanwhile)
                else:
                    assert data is not None
                    result = await link.session.put_chunk(address, data, request.wire, meanwhile=meanwhile)
            except BaseException as exc:
                failure = exc
            try:
                if record is not None and not record.done.is_set() and isinstance(failure, Exception):
                    await write_record()  # the request failed before it was written
                if failure is None and record_error:
                    failure = record_error[0]
                if failure is None:
                    self._answered(link, request, result)
                else:
                    self._failed(link, request)
            finally:
                link._settled()
        finally:
            release()
        if failure is not None:
            if not isinstance(failure, Exception):
                raise failure
            raise _Failed(alone, failure)
        return alone, result

    async def _take_turn(self, link: HostLink, window: int) -> bool:
        """With ``turn`` held: wait for room in the window; True if the request must go alone.

        After a failure (``dirty``, also one that comes while we wait for
        room) the window drains, the link resynchronises (the lock held)
        and the request goes alone: nothing is signed on a projection that
        counts a failed request as charged.
        """
        if not link.dirty:
            await link._until(lambda: link.inflight < window or link.dirty)
            if not link.dirty:
                return False
        await link._until(lambda: link.inflight == 0)
        if link.channel_id is not None:
            await self.sync(link)
        link.dirty = False
        return True

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
                raise remote_error(exc) from None
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
    record: PendingRecord | None  # our ledger record of the payment, if new
    ahead: int | None


class PendingRecord:
    """One of our payment records waiting to be written."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: Exception | None = None


class _Failed(Exception):
    """A request's error, with whether it was sent alone (nothing else in flight)."""

    def __init__(self, alone: bool, error: Exception) -> None:
        super().__init__(str(error))
        self.alone = alone
        self.error = error


def remote_error(exc: RequestError) -> Exception:
    """The payer-side error for an ERROR reply."""
    try:
        code = PaymentErrorCode(exc.code if exc.code is not None else -1)
    except ValueError:
        return exc  # not a payment refusal (NOT_FOUND, OVER_QUOTA...): the transport error as is
    return RemotePaymentError(code, str(exc), owed=exc.owed)
