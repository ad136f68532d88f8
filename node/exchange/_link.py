"""The payer's link to one host: the session, the pure ``PayerLink`` and what waits on them.

``HostLink`` pairs one host's session with ``protocol.payments.payer.PayerLink``
(every rule of the payer's side: totals, account mirror, paid window,
resynchronisation) and adds only what trio needs: the turn lock under which
requests sign and leave in call order, the event that wakes requests
waiting for room, and the journal that writes our payment records.
``sync`` is the CHANNEL_STATE exchange (specs/payments.md §After a crash).
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field

import trio

from node.ledger import Ledger, PaymentEntry, StaleTotal
from node.transport import RequestError, Session
from protocol.bitcoin.channel import PayerChannel
from protocol.payments import Direction, Kind, PaymentErrorCode, RemotePaymentError, Terms
from protocol.payments.messages import ChannelId, ChannelState
from protocol.payments.payer import PayerLink, channel_refused
from protocol.wire import ChannelMessage, MessageType

log = logging.getLogger("mu.payer")


class PendingRecord:
    """One of our payment records waiting to be written."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: Exception | None = None


class PaymentJournal:
    """Writes one link's payment records to our ledger, in signing order, batched.

    The host's record is the one that must precede serving; ours says what
    we signed, and after a crash of ours the host's CHANNEL_STATE restores
    our total (specs/payments.md §After a crash).  Records signed while a
    write is under way go together in the next one.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.unrecorded: list[tuple[PaymentEntry, PendingRecord]] = []
        self._writing: trio.Event | None = None

    def add(self, entry: PaymentEntry) -> PendingRecord:
        """Queue ``entry`` (signed just now, so after every one queued before)."""
        pending = PendingRecord()
        self.unrecorded.append((entry, pending))
        return pending

    async def take_back(self, channel: str, recorded: int) -> None:
        """Before our ledger takes back the payments on ``channel`` above ``recorded``: let a write of
        ours under way end, and drop the records still waiting that are above it.

        A record written after the take-back would count again a payment
        the host never recorded (one whose write failed and waits to be
        tried again, or one written just after its request settled).  A
        dropped record is done, with no error: there is nothing to write.
        """
        while self._writing is not None:
            await self._writing.wait()
        kept = []
        for entry, pending in self.unrecorded:
            if entry.channel_id == channel and entry.total is not None and entry.total > recorded:
                pending.error = None
                pending.done.set()
            else:
                kept.append((entry, pending))
        self.unrecorded = kept

    def withdraw(self, mine: PendingRecord) -> None:
        """Drop ``mine`` if it waits to be written again after a failed write: its payment never left."""
        self.unrecorded = [(entry, pending) for entry, pending in self.unrecorded if pending is not mine]

    async def written(self, mine: PendingRecord) -> None:
        """Return once ``mine`` is written: write every queued record, or wait for the write under way.

        Raises:
            the ledger's error for ``mine`` (LedgerError, sqlite3 errors).
        """
        while not mine.done.is_set():
            if self._writing is not None:
                await self._writing.wait()
                continue
            batch, self.unrecorded = self.unrecorded, []
            self._writing = writing = trio.Event()
            results: list[object] = []
            try:
                # Shielded: a batch taken is written whole, whoever's request is cancelled meanwhile.
                with trio.CancelScope(shield=True):
                    results = list(await trio.to_thread.run_sync(self.ledger.record_payments, [e for e, _ in batch]))
            except Exception as exc:  # every record of the batch failed with it
                results = [exc] * len(batch)
                if isinstance(exc, sqlite3.OperationalError):
                    # Nothing of it is on disk (a full disk, an I/O error): the
                    # payments may have left, so the next write tries them
                    # again, first (signing order).  Their requests fail now.
                    self.unrecorded[:0] = batch
            finally:
                for (_, slot), result in zip(batch, results or [RuntimeError("record interrupted")] * len(batch)):
                    slot.error = result if isinstance(result, Exception) else None
                    slot.done.set()
                self._writing = None
                writing.set()
        if mine.error is not None:
            raise mine.error


@dataclass(slots=True)
class HostLink:
    """The payer's link to one host over one session (see the module docstring)."""

    session: Session
    host: bytes
    machine: PayerLink
    journal: PaymentJournal
    turn: trio.Lock = field(default_factory=trio.Lock)
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def terms(self) -> Terms:
        """The host's verified terms."""
        return self.machine.terms

    @property
    def channel(self) -> PayerChannel | None:
        """Our channel to the host, if one is open."""
        return self.machine.channel

    @property
    def channel_id(self) -> ChannelId | None:
        return self.machine.channel_id

    @property
    def paid(self) -> int:
        """Sats signed over this link's life."""
        return self.machine.paid

    def wake(self) -> None:
        """A request in flight settled: wake the requests waiting for room."""
        event, self.changed = self.changed, trio.Event()
        event.set()


async def channel_request(link: HostLink, kind: MessageType, fields: dict[str, object],
                          expected: MessageType) -> ChannelState:
    """Send a channel message and parse the host's ``expected`` reply.

    Raises:
        RemotePaymentError: the host refused, or answered with something else.
    """
    try:
        reply = await link.session.request(ChannelMessage(request_id=0, type=kind, fields=fields))
    except RequestError as exc:
        raise remote_error(exc) from None
    if not isinstance(reply, ChannelMessage) or reply.type != expected:
        raise RemotePaymentError(PaymentErrorCode.BAD_PAYMENT, f"host answered {kind.name} with {type(reply).__name__}")
    return ChannelState.from_wire(reply.fields)


async def sync(link: HostLink, *, new_session: bool = False) -> ChannelState:
    """Ask the host what it recorded (CHANNEL_STATE) and adopt it.

    What it has not recorded is taken back from our ledger
    (:func:`take_back`) when nothing of ours can still reach it: on a
    session's first ask (``new_session``), or when every payment of ours
    on this session got its answer and none is in flight
    (``PayerLink.may_take_back``).
    """
    assert link.channel_id is not None
    reply = await channel_request(
        link, MessageType.CHANNEL_STATE, {"channel": link.channel_id.to_bytes()}, MessageType.CHANNEL_STATE)
    state = link.machine.adopt(reply)
    await trio.to_thread.run_sync(catch_up, link.journal.ledger, link.host.hex(), state)
    if new_session or link.machine.may_take_back:
        await link.journal.take_back(str(state.channel), state.total)
        link.machine.take_back(state.total)
        await trio.to_thread.run_sync(take_back, link.journal.ledger, link.host.hex(), state)
    return state


def take_back(ledger: Ledger, peer: str, state: ChannelState) -> int:
    """Take back from our ledger the payments above the host's recorded ``state``; return the sats.

    A payment whose request was lost with its session (the host killed
    before it recorded it, or our session dropped on the way) stays counted
    until the host says it never recorded it: its CHANNEL_STATE on a new
    session (specs/payments.md §After a crash).  A payment the host
    answered with a refusal is taken back by the CHANNEL_STATE that
    follows on the same session.  Without this our spent
    would stay above the host's earned for good if we never asked it for
    anything again.  Our next payment signs that total again (we never sign
    below a total we signed), and is recorded then.
    """
    record = ledger.channel(str(state.channel))
    if record is None or state.total >= record.total:
        return 0
    taken: int = ledger.take_back_unrecorded(str(state.channel), recorded=state.total)
    log.info("channel %s to %s: took back %d sats of payments the host never recorded (total %d -> %d)",
             state.channel, peer, taken, record.total, state.total)
    return taken


def catch_up(ledger: Ledger, peer: str, state: ChannelState) -> int:
    """Record in our ledger what the host's ``state`` says we paid above our record; return the sats.

    A kill -9 between a payment leaving and our record committing leaves
    the host with a payment we never wrote (specs/payments.md §After a
    crash): one catch-up row carries the difference (amount: the totals'
    difference, price: the accounts'), so our spent equals the host's
    earned (§Ledger).  Called with the link drained, so no record of ours
    is in flight; one written meanwhile (``StaleTotal``) wins.
    """
    record = ledger.channel(str(state.channel))
    if record is None or state.total <= record.total:
        return 0
    mine = ledger.account(peer, Direction.OUT)
    kind = Kind(state.last_kind) if state.last_kind in tuple(Kind) else Kind.GET
    amount = state.total - record.total
    try:
        ledger.record_payment(peer=peer, direction=Direction.OUT, kind=kind,
                              chunk=state.last_chunk.hex() if state.last_chunk else "",
                              price=max(0, state.consumed - mine.consumed), amount=amount,
                              channel_id=str(state.channel), total=state.total, payer_sig=state.sig)
    except StaleTotal:
        return 0
    log.info("channel %s to %s: recorded %d sats the host recorded and we had not (total %d -> %d)",
             state.channel, peer, amount, record.total, state.total)
    return amount


async def give_up_channel(link: HostLink, *, ask_host: bool = True) -> int:
    """Abandon the channel the host refused (``channel_refused``); return the sats taken back.

    Waits for the window to drain (an answer still due may say the host
    recorded its payment), asks the host what it recorded (CHANNEL_STATE,
    unless ``ask_host`` is False: it has just refused that), then marks
    our row ``closing`` and takes back our payments above the host's last
    total: they were refused, never recorded (specs/payments.md §Channel
    recovery).  The caller holds ``link.turn``.  Nothing happens when
    another request gave the channel up first.

    Raises:
        RemotePaymentError: CHANNEL_STATE was refused for another reason.
        node.transport errors: the session failed (the channel stays, nothing is taken back).
    """
    while link.machine.inflight:
        await link.changed.wait()
    if link.channel_id is None:
        return 0
    if ask_host:
        try:
            await sync(link)
        except RemotePaymentError as exc:
            if not channel_refused(exc.code):
                raise
    abandoned = link.machine.abandon()
    taken_back: int = await trio.to_thread.run_sync(lambda: link.journal.ledger.abandon_payer_channel(
        str(abandoned.channel_id), acknowledged=abandoned.acknowledged))
    log.info("gave up channel %s to %s at total %d (refused; %d sats taken back)", abandoned.channel_id,
             link.host.hex(), abandoned.acknowledged, taken_back)
    return taken_back


def remote_error(exc: RequestError) -> Exception:
    """The payer-side error for an ERROR reply."""
    try:
        code = PaymentErrorCode(exc.code if exc.code is not None else -1)
    except ValueError:
        return exc  # not a payment refusal (NOT_FOUND, OVER_QUOTA...): the transport error as is
    return RemotePaymentError(code, str(exc), owed=exc.owed)
