"""Paid requests in a window: the I/O of specs/payments.md §Paid window on the payer's side.

``PaidWindow`` sends the GETs and PUTs of ``Payer``; the link's pure
``PayerLink`` (protocol/payments/payer.py) decides everything about
payments: whether a request may go now, must wait for room, or must wait
for the window to drain and resynchronise (CHANNEL_STATE) to go alone;
what it pays; what an answer or a failure does; when to top up.  Here
are only the turn lock under which requests sign and leave in call order,
the waits, the session calls and our ledger records.

Two ways a request travels.  In a window above one, each request runs in
its caller's task (``_attempt_in_window``): the callers are the window,
and no task, nursery or scheduling round is added per request.  One
request at a time (a window of one) is latency-bound instead: helper
tasks sign the likely next payment ahead and write our record while the
request travels (``_send_with_record``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from node.exchange._link import HostLink, PendingRecord, give_up_channel, remote_error, sync
from node.ledger import PaymentEntry
from node.transport import BadChunk, RequestError, SessionBroken, TransportError
from protocol.erasure import AuditChallenge
from protocol.payments import Direction, Kind, PaymentError, PriceTooHigh, chunk_price, paid_window
from protocol.payments.payee import price_of
from protocol.payments.payer import (Admission, Answer, Charge, Failure, PaymentRounds, Refusal, Request,
                                     channel_refused)
from protocol.wire import MAX_DATA_SIZE, Audit, AuditProof, ErrorCode, PutChunk, PutOk

log = logging.getLogger("mu.payer")

# Scheduling rounds a request's signer waits after starting it, so that it
# reaches the session's send queue before the next request signs (the
# session takes two to queue it).  Wire order is a speed matter only: the
# payee serves a covered request whose payment arrived late.
_QUEUE_ROUNDS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class _Prepared:
    """A signed request ready to leave (see ``PaidWindow._prepare``)."""

    charge: Charge
    wire: dict[str, object] | None
    record: PendingRecord | None  # our ledger record of the payment, if new


@dataclass(frozen=True, slots=True, kw_only=True)
class RenewalPut:
    """What a renewal sends: the chunk again, which the host keeps longer (specs/erasure.md §9 Renewal)."""

    address: bytes
    data: bytes


# What a request carries beside its charge's name: a PUT's chunk, an AUDIT's challenge, a renewal.
Body = bytes | AuditChallenge | RenewalPut | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Paid:
    """A paid request's answer, and the sats its own payments newly signed (over all its attempts).

    Each request counts only what its own charges signed: with requests of
    one link in flight together, the link's running total moves for all of
    them at once.
    """

    answer: bytes | bool
    signed: int


class Tally:
    """The sats one caller's paid requests signed, counted as each payment is signed.

    ``Paid.signed`` reports a request's sats when it returns; a request its
    caller gives up (a timeout, a cancelled fetch) returns nothing, yet its
    payment may have left (specs/payments.md §Paid window): the tally counts
    it all the same.  A payment the host refused and our ledger took back
    (``sync``) leaves the count again: it was neither spent nor lost.
    """

    __slots__ = ("signed",)

    def __init__(self) -> None:
        self.signed = 0


class _Own:
    """One request's payments over its attempts: the sats they signed, net of any our ledger took back.

    Each is counted in the caller's ``tally`` too, as it is signed; a
    payment the host refused and a resynchronisation of this request took
    back (``sync``) is neither spent nor lost, and leaves both.
    """

    __slots__ = ("signed", "tally")

    def __init__(self, tally: Tally | None) -> None:
        self.signed = 0
        self.tally = tally

    def add(self, sats: int) -> None:
        self.signed += sats
        if self.tally is not None:
            self.tally.signed += sats

    async def resync(self, link: HostLink) -> None:
        """``sync`` the link; the sats it took back, up to what this request signed, leave its count."""
        before = link.machine.taken_back
        await sync(link)
        self.add(-min(self.signed, link.machine.taken_back - before))


class PaidBadChunk(BadChunk):
    """A host answered a paid GET with bytes that are not the chunk; ``paid`` sats went with the request."""

    def __init__(self, message: str, paid: int) -> None:
        super().__init__(message)
        self.paid = paid


class _Failed(Exception):
    """A request's error, with whether it was sent alone (nothing else in flight)."""

    def __init__(self, alone: bool, error: Exception) -> None:
        super().__init__(str(error))
        self.alone = alone
        self.error = error


class PaidWindow:
    """Sends paid GET and PUT over host links (see the module docstring)."""

    def __init__(self, *, max_price_per_mib_get: int, max_price_per_mib_put: int) -> None:
        self.max_price_per_mib_get = max_price_per_mib_get
        self.max_price_per_mib_put = max_price_per_mib_put

    async def request(self, link: HostLink, kind: Kind, address: bytes, size: int, data: Body,
                      tally: Tally | None = None, *, largest: int | None = None) -> Paid:
        """One paid GET, PUT or AUDIT of ``size`` bytes, retried as the link's ``PaymentRounds`` decide.

        A PUT's ``data`` is the chunk; an AUDIT's is its challenge, and
        ``address`` its nonce; a RENEW's is a ``RenewalPut``, and ``address``
        the renewal's id (each audit and renewal is its own charge).
        ``tally``, if given, counts each of its payments as it is signed.
        ``largest`` is the most ``size`` may turn out to be (for a GET whose
        size is not known: ``size`` is then a guess); a request tried again
        goes alone, priced at it (``PaymentRounds``).

        Raises:
            RemotePaymentError: the host refused the payment or the channel.
            PriceTooHigh: the host asked more than one chunk at our maximum price.
            PaidBadChunk: the answer's bytes are not the chunk (``paid``: what this request signed).
            node.transport errors: the session failed (the caller reconnects).
        """
        terms = link.terms
        price = price_of(terms, kind, size)
        most = price_of(terms, kind, max(size, largest or size))
        maximum = self.max_price_per_mib_put if kind in (Kind.PUT, Kind.RENEW) else self.max_price_per_mib_get
        rounds = PaymentRounds(chunk_price(MAX_DATA_SIZE, maximum))
        own = _Own(tally)
        while True:
            rounds.start()
            try:
                answer = await self._attempt(
                    link, Request(kind=kind, chunk=address, price=most if rounds.alone else price, hint=rounds.hint,
                                  alone=rounds.alone), data, own)
                return Paid(answer=answer, signed=own.signed)
            except _Failed as failed:
                error, alone = failed.error, failed.alone
            except PaymentError as exc:  # refused before it left: the channel's capacity is used up...
                await _give_up_if_refused(link, exc)
                raise
            if isinstance(error, BadChunk):
                raise PaidBadChunk(str(error), paid=own.signed) from None
            if not isinstance(error, RequestError):
                raise error
            try:
                again = rounds.refused(Refusal(code=error.code, owed=error.owed, alone=alone))
            except (PaymentError, PriceTooHigh):
                await _take_back_refused(link, own)
                raise
            if not again:
                final = remote_error(error)
                if isinstance(final, PaymentError) and channel_refused(final.code):
                    await _give_up_if_refused(link, final)
                else:
                    await _take_back_refused(link, own)
                raise final

    async def _attempt(self, link: HostLink, request: Request, data: Body, own: _Own) -> bytes | bool:
        """One try of a request; returns its answer (``own`` counts its payment), or raises ``_Failed``."""
        if paid_window(request.price, link.terms.free_allowance) > 1:
            return await self._attempt_in_window(link, request, data, own)
        outcome: list[object] = []
        refusal: Exception | None = None  # raised here, not wrapped in the nursery's group
        alone = False
        async with trio.open_nursery() as nursery:
            try:
                async with link.turn:  # requests sign and leave in call order
                    await self._take_turn(link, request, own)
                    prepared = self._prepare(link, request, own)
                    alone = prepared.charge.alone
                    if alone:
                        await self._exchange(link, prepared, data, outcome)
                    else:
                        nursery.start_soon(self._exchange, link, prepared, data, outcome)
                        for _ in range(_QUEUE_ROUNDS):  # let it reach the send queue first
                            await trio.lowlevel.checkpoint()
            except Exception as exc:  # no payment owed without a channel, a failed resync...
                refusal = exc
        if refusal is not None:
            raise refusal
        if isinstance(outcome[0], Exception):
            raise _Failed(alone, outcome[0])
        return outcome[0]  # type: ignore[return-value]

    async def _attempt_in_window(self, link: HostLink, request: Request, data: Body, own: _Own) -> bytes | bool:
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
            await self._take_turn(link, request, own)
            prepared = self._prepare(link, request, own)
            alone, record = prepared.charge.alone, prepared.record
            record_error: list[Exception] = []

            async def write_record() -> None:
                assert record is not None
                try:
                    await link.journal.written(record)
                except Exception as exc:  # the payment may have left: the answer is still awaited
                    record_error.append(exc)

            async def meanwhile() -> None:
                if not alone:
                    release()
                if record is not None:
                    await write_record()

            failure: BaseException | None = None
            result: bytes | bool = b""
            answered = False
            try:
                result = await _send(link, request, data, prepared.wire, meanwhile)
                answered = True
            except BaseException as exc:
                failure = exc
                answered = _answered(exc)
            try:
                if record is not None and failure is not None:
                    await _record_now(link, record)  # the request failed before it was written
                if failure is None and record_error:
                    failure = record_error[0]
            finally:
                _settle(link, prepared, result, failed=failure is not None, answered=answered)
        finally:
            release()
        if failure is not None:
            if not isinstance(failure, Exception):
                raise failure
            raise _Failed(alone, failure)
        return result

    @staticmethod
    async def _take_turn(link: HostLink, request: Request, own: _Own) -> None:
        """With ``turn`` held: wait, or resynchronise, until the link lets ``request`` go
        and the session can queue it at once.

        Nothing waits between the payment's signature and the send queue
        then: a cancelled request's payment has left, or was never signed.
        """
        while True:
            admission = link.machine.admit(request.price, alone=request.alone)
            if admission is Admission.WAIT:
                await link.changed.wait()
            elif admission is Admission.RESYNC:
                await own.resync(link)
            elif not link.session.can_queue():
                await link.session.queue_room()
            else:
                return

    @staticmethod
    def _prepare(link: HostLink, request: Request, own: _Own) -> _Prepared:
        """Sign what ``request`` owes (the link counts it in flight, ``own`` its sats) and queue our
        record of a new payment."""
        charge = link.machine.send(request)
        own.add(charge.signed)
        payment, record = charge.payment, None
        if charge.new:
            assert payment is not None
            record = link.journal.add(PaymentEntry(
                peer=link.host.hex(), direction=Direction.OUT, kind=request.kind, chunk=request.chunk.hex(),
                price=request.price, amount=charge.signed, channel_id=str(payment.channel), total=payment.total,
                payer_sig=payment.sig))
        return _Prepared(charge=charge, wire=payment.to_wire() if payment is not None else None, record=record)

    async def _exchange(self, link: HostLink, prepared: _Prepared, data: Body,
                        outcome: list[object]) -> None:
        """Send a prepared request and settle it: the answer (or the error) goes to ``outcome``."""
        try:
            result = await self._send_with_record(link, prepared, data)
        except BaseException as exc:
            _settle(link, prepared, None, failed=True, answered=_answered(exc))
            if prepared.record is not None:
                await _record_now(link, prepared.record)
            if not isinstance(exc, Exception):
                raise
            outcome.append(exc)
            return
        _settle(link, prepared, result, failed=False, answered=True)
        outcome.append(result)

    async def _send_with_record(self, link: HostLink, prepared: _Prepared,
                                data: Body) -> bytes | bool:
        """Send the request; have our own record of a new payment written by the time it returns.

        With a likely next total (``Charge.ahead``), its payment is signed
        while the host works, once the request has been handed to the
        session's writer, so the next request does not wait for a signature.
        """
        outcome: list[object] = []
        request, wire, ahead, record = prepared.charge.request, prepared.wire, prepared.charge.ahead, prepared.record

        async def send() -> None:
            try:
                outcome.append(await _send(link, request, data, wire, None))
            except Exception as exc:  # handed back below, outside the nursery
                outcome.append(exc)

        # Both helpers give up one scheduling round first: the session's
        # writer, woken by our request in the same round, seals and writes
        # it before the signature (~0.15 ms of the event loop) or the record
        # thread (which competes for the GIL and a core) gets going.
        async def sign_ahead() -> None:
            assert ahead is not None
            await trio.lowlevel.checkpoint()
            link.machine.sign_ahead(ahead)

        async def record_mine() -> None:
            assert record is not None
            await trio.lowlevel.checkpoint()
            await link.journal.written(record)

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


async def _send(link: HostLink, request: Request, data: Body, wire: dict[str, object] | None,
                meanwhile: Callable[[], Awaitable[None]] | None) -> bytes | bool:
    """The session call of one request: GET_CHUNK, PUT_CHUNK (a renewal's too), or a charged AUDIT (its proof back)."""
    if request.kind is Kind.GET:
        return await link.session.get_chunk(request.chunk, wire, meanwhile=meanwhile)
    if request.kind is Kind.AUDIT:
        assert isinstance(data, AuditChallenge)
        reply = await link.session.request(Audit(request_id=0, address=data.address, nonce=data.nonce,
                                                 offset=data.offset, length=data.length, charge=True, payment=wire),
                                           meanwhile=meanwhile)
        if not isinstance(reply, AuditProof):
            raise SessionBroken(f"AUDIT answered with {type(reply).__name__}", ErrorCode.UNEXPECTED_MESSAGE)
        return bytes(reply.proof)
    if request.kind is Kind.RENEW:
        assert isinstance(data, RenewalPut)
        reply = await link.session.request(PutChunk(request_id=0, address=data.address, data=data.data, payment=wire,
                                                    renewal=request.chunk), meanwhile=meanwhile)
        if not isinstance(reply, PutOk) or reply.address != data.address:
            raise SessionBroken(f"PUT_CHUNK answered with {type(reply).__name__}", ErrorCode.UNEXPECTED_MESSAGE)
        return reply.stored
    assert isinstance(data, bytes)
    return await link.session.put_chunk(request.chunk, data, wire, meanwhile=meanwhile)


async def _record_now(link: HostLink, record: PendingRecord) -> None:
    """Have our record of a request that failed or was cancelled written now, shielded.

    Its payment may have left, and the payee may record it: ours must not
    wait for some later request on the link.  A write that fails is the
    journal's to try again (``PaymentJournal.written``); the request fails
    with its own error.
    """
    if record.done.is_set():
        return
    with trio.CancelScope(shield=True):
        try:
            await link.journal.written(record)
        except Exception:  # noqa: BLE001 - see the docstring
            pass


async def _give_up_if_refused(link: HostLink, error: Exception) -> None:
    """After a final refusal: give the channel up when the host takes no more payments on it.

    The next request then owes a new channel (``node.exchange.paying``
    opens one); our refused payments on this one are taken back from what
    we spent (specs/payments.md §Channel recovery).
    """
    if isinstance(error, PaymentError) and channel_refused(error.code) and link.channel_id is not None:
        async with link.turn:
            await give_up_channel(link)


async def _take_back_refused(link: HostLink, own: _Own) -> None:
    """After a request's final refusal: have our ledger drop the payments the host never recorded.

    The request is not tried again, and the link may carry nothing more for
    long, so the resynchronisation a next request would make is made now:
    once the window has drained, CHANNEL_STATE, whose total takes back what
    the host refused (``sync``; specs/payments.md §Paid window).  Only when
    we signed above what the host acknowledged; nothing when another
    request resynchronised meanwhile.  A failure of the ask is logged and
    left to the next request or session: the refusal is raised as is.
    """
    async with link.turn:
        while link.machine.inflight:
            await link.changed.wait()
        if not link.machine.refused_above or link.channel_id is None:
            return
        try:
            await own.resync(link)
        except (PaymentError, TransportError) as exc:
            log.info("could not ask %s what it recorded after a refusal: %s", link.host.hex()[:12], exc)


def _answered(exc: BaseException) -> bool:
    """Whether a request's failure is the host's answer (an ERROR, bytes that are not the chunk)."""
    return isinstance(exc, (RequestError, BadChunk))


def _settle(link: HostLink, prepared: _Prepared, result: object, *, failed: bool, answered: bool) -> None:
    """Tell the link how a request in flight ended and wake the requests waiting for room.

    ``answered``: the host answered it (else it was given up or lost with
    its session, and its payment may still reach the host's ledger).
    """
    try:
        if failed:
            link.machine.settle(Failure(charge=prepared.charge, answered=answered))
        else:
            # A GET is charged by the size it got; a PUT and an AUDIT by the size asked.
            size = len(result) if prepared.charge.request.kind is Kind.GET and isinstance(result, (bytes, bytearray, memoryview)) else None
            link.machine.settle(Answer(charge=prepared.charge, size=size))
    finally:
        link.wake()

