"""Paying hosts during network operations (specs/network.md §4, §7; specs/payments.md).

``PaidPeers`` wraps the paid exchange's :class:`node.exchange.Payer` for
the fetcher and the uploader: one :class:`node.exchange.HostLink` per host,
with as many paid requests in flight to it as its paid window lets the
link's ``PayerLink`` send (specs/payments.md §Paid window), and a channel
opened on demand the first time a host asks for payment past its free
allowance, and again when the host refuses the channel it had (unknown,
closed or closing, past its deadline, used up: specs/payments.md §Channel
recovery), within a budget of opens per host (``ChannelOpenBudget``; a
replacement for a channel the host served enough on is not counted):
funded from the node's wallet, waited for until it has the confirmations
the host's terms require, then announced, and the request tried once more
on it.

Each host has a gate (``_HostGate``): its lock is held only to make the
host's link and to open (or finish opening) a channel; requests pass it on
their way in and are counted while inside.  An opener waits for the
requests inside to end before it funds: none of them may then sign on, or
ask CHANNEL_STATE about, a channel the host has not heard of yet, and a new
request waits at the gate until the channel is announced.  A link is
replaced (a new session to the host) only once the old one's requests are
out, so two links never sign on one channel at once.

One funding transaction is built and sent at a time (each one then sees
the wallet's coins the others have not spent), and the fundings asked for
meanwhile go together in the next one, one output per channel; the wait
for confirmations is not serialised, so a channel to one host never waits
behind another host's.  A funding that finds no coin while our other
fundings are unconfirmed (their change is not spendable yet) waits for a
block.  Every wait is bounded (``CONFIRM_TIMEOUT``) and logged at info
level with its cause once it has taken ``SLOW_WAIT`` seconds.

A caller that says how much its operation still means to ask for
(``request``'s ``more``) gets the channel it will need funded ahead, in the
background, while the host's free allowance lasts: when the allowance
runs out the request that needs the channel only announces it
(specs/payments.md §Channel recovery, "Funding ahead").
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

from node.exchange import FundedChannel, HostLink, Payer
from node.exchange._window import Body, PaidBadChunk, RenewalPut, Tally
from node.runtime.tasks import helper_nursery
from node.bitcoin.rpc import RPCClient
from node.transport import Session, TransportError
from node.bitcoin.wallet import InsufficientFunds, Wallet
from protocol.bitcoin import BadKeyError, PublicKey
from protocol.erasure import AuditChallenge
from protocol.payments import (ChannelStatus, Kind, PaymentError, PaymentErrorCode, PriceTooHigh,
                               RemotePaymentError, Role)
from protocol.payments.messages import ChannelId
from protocol.payments.payee import price_of
from protocol.payments.payer import ChannelOpenBudget, channel_refused

log = logging.getLogger("mu.paying")

DEFAULT_CHANNEL_CAPACITY = 2_000_000  # sats per channel opened on demand
DEFAULT_EXPIRY_BLOCKS = 1_008  # about a week of blocks
CONFIRM_TIMEOUT = 120.0  # seconds to wait for a funding output's confirmations (or for coins to fund it)
# The chain is asked again after FIRST_CONFIRM_POLL seconds, then twice as
# long each time up to CONFIRM_POLL: a devnet mines a funding within
# milliseconds, and every paid request to the host waits for its
# confirmation (specs/network.md §4 Paying).
FIRST_CONFIRM_POLL = 0.01
CONFIRM_POLL = 0.25
SLOW_WAIT = 5.0  # seconds after which a wait is logged at info level, with its cause
# A channel is funded ahead of need when what the operation still means to ask for costs, at the
# host's price, at least this many times the host's free allowance (specs/payments.md §Channel
# recovery, "Funding ahead"): a share of it beyond the allowance is then all but certain for each of
# up to this many hosts serving it side by side.
AHEAD_FACTOR = 4
# Start-up reconciliation of open payer channels (specs/payments.md §After a crash): the
# delay before each attempt; the last one comes after the dialer's 300 s unreachable mark.
RECONCILE_DELAYS = (0.0, 30.0, 330.0)
RECONCILE_TIMEOUT = 30.0  # seconds for one attempt (dial, HELLO, CHANNEL_STATE)


@asynccontextmanager
async def logged_if_slow(cause: str, *args: object, after: float = SLOW_WAIT) -> AsyncIterator[None]:
    """Log ``cause % args`` at info level if the body is still running after ``after`` seconds.

    What the body raises comes out as itself, not wrapped in the exception
    group of the nursery that runs the log line (its task raises nothing).
    """
    async def note() -> None:
        await trio.sleep(after)  # a deadline for the log line, not synchronisation
        log.info("still " + cause + " after %.0f s", *args, after)

    async with helper_nursery() as nursery:
        nursery.start_soon(note)
        yield


class _HostGate:
    """One host's way in to paid requests (see the module docstring): a lock and the requests inside."""

    def __init__(self) -> None:
        self.lock = trio.Lock()  # held to make the link, and to open or resume opening a channel
        self.inside = 0
        self._empty = trio.Event()
        self._empty.set()

    def enter(self) -> None:
        if not self.inside:
            self._empty = trio.Event()
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1
        if not self.inside:
            self._empty.set()

    async def emptied(self) -> None:
        """Return once no request is inside (the caller holds ``lock``, so none comes in)."""
        while self.inside:
            await self._empty.wait()


class _FundingOrder:
    """One channel funding asked for (``PaidPeers._fund``): sent with the others queued beside it."""

    def __init__(self, link: HostLink, capacity: int, take: bool) -> None:
        self.link, self.capacity, self.take = link, capacity, take
        self.done = trio.Event()
        self.funded: FundedChannel | None = None
        self.error: Exception | None = None


class _Ahead:
    """A funding started ahead of need (``PaidPeers._fund_ahead``): the channel once sent.

    ``done`` is set once it is confirmed, or its funding or confirmation
    failed; ``funded`` is None then only if nothing was sent (the channel is
    funded on demand).
    """

    def __init__(self) -> None:
        self.done = trio.Event()
        self.funded: FundedChannel | None = None


def _needs_channel(exc: PaymentError) -> bool:
    """Whether a request's refusal asks for a (new) channel: payment owed, or the channel refused."""
    return exc.code == PaymentErrorCode.INSUFFICIENT_PAYMENT or channel_refused(exc.code)


class PaidPeers:
    """Paid GET and PUT to many hosts, opening channels as needed."""

    def __init__(self, payer: Payer, wallet: Wallet, rpc: RPCClient, *,
                 capacity: int = DEFAULT_CHANNEL_CAPACITY, expiry_blocks: int = DEFAULT_EXPIRY_BLOCKS,
                 clock: Callable[[], float] = time.monotonic, nursery: trio.Nursery | None = None) -> None:
        self.payer = payer
        self.wallet = wallet
        self.rpc = rpc
        self.capacity = capacity
        self.expiry_blocks = expiry_blocks
        self._clock = clock
        self._links: dict[bytes, HostLink] = {}
        self._gates: dict[bytes, _HostGate] = {}
        self._budgets: dict[bytes, ChannelOpenBudget] = {}
        self._orders: list[_FundingOrder] = []  # fundings asked for, to go in the next transaction
        self._sending = False  # a task is sending fundings (``_send_fundings``)
        self._unconfirmed = 0  # our fundings sent and not yet confirmed
        self._unannounced: dict[bytes, ChannelId] = {}  # funded, OPEN_CHANNEL not yet accepted
        # Fundings ahead of need run here (None: channels are funded only on demand).
        self._nursery = nursery
        self._ahead: dict[bytes, _Ahead] = {}  # per host: a funding started ahead, not yet taken by its link

    async def link(self, session: Session) -> HostLink:
        """The host link for ``session``'s peer (terms verified; PriceTooHigh above our maximum)."""
        gate = self._gates.setdefault(session.peer_node_id, _HostGate())
        async with gate.lock:
            return await self._current_link(session, gate)

    async def _current_link(self, session: Session, gate: _HostGate) -> HostLink:
        """``link`` with ``gate.lock`` held: a new session's link waits for the old link's requests to end."""
        host = session.peer_node_id
        link = self._links.get(host)
        if link is None or link.session is not session:
            await gate.emptied()
            link = await self.payer.link(session, unannounced=self._unannounced.get(host))
            self._links[host] = link
        return link

    @asynccontextmanager
    async def _inside(self, session: Session) -> AsyncIterator[HostLink]:
        """Pass the host's gate (finishing the opening of a channel a cancelled request left unannounced)."""
        gate = self._gates.setdefault(session.peer_node_id, _HostGate())
        async with gate.lock:
            link = await self._current_link(session, gate)
            pending = self._unannounced.get(link.host)
            if pending is not None and pending == link.channel_id:
                log.info("resuming the opening of channel %s to %s", pending, link.host.hex())
                await self._announce(link, pending)
            gate.enter()
        try:
            yield link
        finally:
            gate.leave()

    async def reconcile(self, dial: Callable[[bytes], Awaitable[Session | None]]) -> None:
        """Resynchronise every open payer channel with its host, each in its own task; return when all ended.

        ``dial`` opens a session to a node ID (None: unreachable).  A kill -9
        may have left a host with a payment our ledger never recorded, and we
        may never ask that host for anything again: linking sends
        CHANNEL_STATE and records the host's higher total
        (specs/payments.md §After a crash).  Bounded attempts
        (``RECONCILE_DELAYS``), each logged; a host never reached keeps the
        difference, at most one paid window's exposure, which its close
        settles on chain.
        """
        records = await trio.to_thread.run_sync(
            lambda: self.payer.ledger.channels(role=Role.PAYER, states=(ChannelStatus.OPEN,)))
        async with trio.open_nursery() as nursery:
            for host in sorted({r.peer for r in records}):
                nursery.start_soon(self._reconcile_host, dial, bytes.fromhex(host))

    async def _reconcile_host(self, dial: Callable[[bytes], Awaitable[Session | None]], host: bytes) -> None:
        cause = "not tried"
        for attempt, delay in enumerate(RECONCILE_DELAYS, 1):
            await trio.sleep(delay)  # a back-off between attempts, not synchronisation
            try:
                with trio.fail_after(RECONCILE_TIMEOUT):
                    session = await dial(host)
                    if session is not None:
                        await self.link(session)
                        log.info("reconciled our channel with %s (attempt %d)", host.hex(), attempt)
                        return
                cause = "unreachable"
            except (PaymentError, PriceTooHigh, TransportError, OSError, trio.TooSlowError) as exc:
                cause = f"{type(exc).__name__}: {exc}"
            log.info("cannot reconcile our channel with %s (attempt %d of %d): %s", host.hex(), attempt,
                     len(RECONCILE_DELAYS), cause)
        log.warning("gave up reconciling our channel with %s (%s): our ledger may be short of the host's by "
                    "at most one paid window; the host's close settles its total on chain", host.hex(), cause)

    async def _open_channel(self, link: HostLink, cause: PaymentError) -> None:
        """Fund, confirm and announce a new channel to ``link``'s host (the request failed with ``cause``).

        Raises:
            ``cause``: the budget of opens to this host is spent for now.
            trio.TooSlowError: no coin or no confirmation within ``CONFIRM_TIMEOUT``.
        """
        await self._gates[link.host].emptied()  # none inside may sign on the channel before the host knows it
        budget = self._budgets.setdefault(link.host, ChannelOpenBudget())
        replacing = link.machine.replacing
        if not budget.allows(self._clock(), replacing):
            log.warning("not opening another channel to %s: %d opened in the last %.0f s (%s)",
                        link.host.hex(), budget.limit, budget.period, cause)
            raise cause
        if replacing is not None and not budget.counts(replacing):
            log.info("replacing channel %s to %s, which carried %d sats: not counted against the budget of opens",
                     replacing.channel_id, link.host.hex(), replacing.acknowledged)
        budget.spend(self._clock(), replacing)
        funded = await self._funded_ahead(link)
        if funded is not None:
            self.payer.take(link, funded)  # the gate is empty: no request signs on it before the host knows it
            channel = funded.channel_id
        else:
            channel = (await self._fund(link, max(self.capacity, link.terms.min_capacity))).channel_id
        await self._announce(link, channel)

    def _fund_ahead_if_due(self, link: HostLink, kind: Kind, more: int) -> None:
        """Start funding a channel to ``link``'s host in the background if the operation will need one.

        Due when the link has no channel, none is being funded or waits to be
        announced, the host is paid (not in balance mode), another open is
        within the budget, and ``more`` bytes of ``kind`` cost at least
        ``AHEAD_FACTOR`` times the host's free allowance (specs/payments.md
        §Channel recovery, "Funding ahead").
        """
        host = link.host
        if (self._nursery is None or link.channel is not None or host in self._ahead or host in self._unannounced
                or (self.payer.balance is not None and self.payer.balance.active(link.session))):
            return
        if price_of(link.terms, kind, more) < AHEAD_FACTOR * max(1, link.terms.free_allowance):
            return
        if not self._budgets.setdefault(host, ChannelOpenBudget()).allows(self._clock(), link.machine.replacing):
            return
        ahead = self._ahead[host] = _Ahead()
        self._nursery.start_soon(self._fund_ahead, link, ahead)

    async def _fund_ahead(self, link: HostLink, ahead: _Ahead) -> None:
        """Send and confirm a funding for ``link``'s host, taken by no link yet (``_funded_ahead`` takes it).

        Requests to the host go on meanwhile, within its free allowance: the
        link is not touched, so none signs on the channel.  A failure is
        logged; the request that needs the channel then funds one itself.
        """
        try:
            # Sent is enough to be taken: a confirmation still missing is waited for again when it is announced.
            ahead.funded = await self._fund(link, max(self.capacity, link.terms.min_capacity), take=False)
            self._unconfirmed += 1
            try:
                await self._confirmed(link, ahead.funded.channel_id)
            finally:
                self._unconfirmed -= 1
        except Exception as exc:  # a background task of the node's: logged, never the node's end
            log.warning("funding a channel to %s ahead of need: %s: %s (%s)", link.host.hex(), type(exc).__name__,
                        exc, "it is announced once confirmed" if ahead.funded else "it is funded when needed")
        finally:
            ahead.done.set()

    async def _funded_ahead(self, link: HostLink) -> FundedChannel | None:
        """The channel funded ahead for ``link``'s host, once confirmed (or its wait for that ended); None if none.

        A channel a link took meanwhile (a new session's link adopts it from
        the ledger, ``_inside`` announces it) is no longer offered.
        """
        ahead = self._ahead.get(link.host)
        if ahead is None:
            return None
        await ahead.done.wait()
        del self._ahead[link.host]
        funded = ahead.funded
        if funded is None or self._unannounced.get(link.host) != funded.channel_id:
            return None
        return funded

    async def _announce(self, link: HostLink, channel: ChannelId) -> None:
        """Wait for the funding's confirmations, then OPEN_CHANNEL.

        A request cancelled meanwhile (the fetcher's request timeout) leaves
        the channel in ``_unannounced``: the next request to the host
        resumes here rather than pay on a channel the host never heard of.
        """
        self._unconfirmed += 1
        try:
            await self._confirmed(link, channel)
        finally:
            self._unconfirmed -= 1
        await self.payer.announce(link)
        del self._unannounced[link.host]
        ahead = self._ahead.get(link.host)
        if ahead is not None and ahead.funded is not None and ahead.funded.channel_id == channel:
            del self._ahead[link.host]  # a new link adopted the channel funded ahead: announced now

    async def _fund(self, link: HostLink, capacity: int, *, take: bool = True) -> FundedChannel:
        """Send the funding transaction of a channel to ``link``'s host (bounded by ``CONFIRM_TIMEOUT``).

        With ``take`` the link's next payments sign on it; else the link is
        left alone.  Fundings asked for while one is being sent go together
        in the next transaction (``_send_fundings``).
        """
        host = link.host.hex()
        with trio.fail_after(CONFIRM_TIMEOUT):
            async with logged_if_slow("funding a channel to %s (sending it, or waiting for a block to free the wallet's coins)", host):
                while True:
                    order = _FundingOrder(link, capacity, take)
                    self._orders.append(order)
                    try:
                        if not self._sending:
                            await self._send_fundings()
                        await order.done.wait()
                    finally:
                        if order in self._orders:  # cancelled before it was taken: nothing was sent for it
                            self._orders.remove(order)
                    if order.funded is not None:
                        break
                    if not (isinstance(order.error, InsufficientFunds) and self._unconfirmed):
                        assert order.error is not None
                        raise order.error
                    # Our unconfirmed fundings hold the coins (their change spends once mined).
                    await trio.sleep(CONFIRM_POLL)  # polling the chain, bounded by fail_after
        log.info("funded channel %s to %s (%d sats%s)", order.funded.channel_id, host, capacity,
                 "" if take else ", ahead of need")
        return order.funded

    async def _send_fundings(self) -> None:
        """Send the queued fundings, all those queued at once in one transaction, until none is queued.

        Shielded: a cancellation (the fetcher's request timeout) waits for the
        end, so a funding sent is always recorded, given to its link when it
        asked (``take``) and listed as not yet announced (``_unannounced``):
        the next request to that host announces it.  Each transaction then
        sees the wallet's coins the ones before did not spend.
        """
        self._sending = True
        try:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()  # fundings asked for in the same step go in the first transaction
                while self._orders:
                    group = []
                    for order in self._orders:
                        try:  # a host's key that is no curve point fails its own funding, not the group's
                            PublicKey(order.link.terms.payment_pubkey)
                        except BadKeyError as exc:
                            order.error = exc
                            order.done.set()
                        else:
                            group.append(order)
                    self._orders = []
                    if not group:
                        continue
                    try:
                        with trio.fail_after(CONFIRM_TIMEOUT):
                            tip = int(await self.rpc.call("getblockcount"))
                            funded = await self.payer.fund_many(
                                [(o.link, o.capacity, tip + max(self.expiry_blocks, o.link.terms.expiry_window + 6))
                                 for o in group], self.wallet)
                    except Exception as exc:  # each order's own request raises it (``_fund``)
                        for order in group:
                            order.error = exc
                    else:
                        for order, channel in zip(group, funded):
                            if order.take:
                                self.payer.take(order.link, channel)
                            self._unannounced[order.link.host] = channel.channel_id
                            order.funded = channel
                    for order in group:
                        order.done.set()
        finally:
            self._sending = False

    async def _confirmed(self, link: HostLink, channel: ChannelId) -> None:
        """Wait until the funding of ``channel`` has the confirmations the host's terms ask."""
        txid = bytes(reversed(channel.txid)).hex()
        needed = max(1, link.terms.min_confirmations)
        try:
            with trio.fail_after(CONFIRM_TIMEOUT):
                async with logged_if_slow("waiting for %d confirmation(s) of channel %s to %s", needed, channel,
                                          link.host.hex()):
                    pause = FIRST_CONFIRM_POLL
                    while True:
                        out = await self.rpc.call("gettxout", txid, channel.vout)
                        if out and int(out.get("confirmations", 0)) >= needed:
                            return
                        await trio.sleep(pause)  # polling the chain, bounded by fail_after
                        pause = min(2 * pause, CONFIRM_POLL)
        except trio.TooSlowError:
            log.warning("channel %s to %s: funding not confirmed %d time(s) within %.0f s", channel,
                        link.host.hex(), needed, CONFIRM_TIMEOUT)
            raise

    async def request(self, session: Session, kind: Kind, address: bytes, data: Body = None, *,
                      size: int | None = None, tally: Tally | None = None, more: int = 0) -> tuple[object, int]:
        """One paid GET, PUT or AUDIT; returns (reply, sats its own payments signed).

        It runs beside the host's other requests, as many in flight as the
        link's paid window lets go (specs/payments.md §Paid window); the sats
        are this request's, not the link's running total's move meanwhile.

        ``size`` is a GET's chunk size when the caller knows it (a data chunk,
        from its manifest): the request is priced by it, so the payment that
        goes with the next one is the host's own count (specs/payments.md
        §Paid window) and is never refused as short.

        With a free allowance of one chunk's price, what goes with a request
        pays for the one before it (specs/payments.md §Accounting).  When
        the request needs a channel (none yet, or the host refused the one
        it had, which the payer then gave up), a new one is opened and the
        request tried once more on it (specs/payments.md §Channel recovery).

        ``tally``, if given, counts the sats of each payment as it is
        signed, those of a request its caller then gives up included.

        ``more`` is what the caller's operation still means to ask of hosts
        after this request, in bytes: once the host has answered, a channel
        it will need is funded in the background, ahead of need
        (``_fund_ahead_if_due``).

        Raises:
            PaidBadChunk: the reply's bytes are not the chunk (``paid`` went with it).
        """
        owed = 0
        async with self._inside(session) as link:
            try:
                paid = await self.payer.request(link, kind, address, data, size=size, tally=tally)
            except PaymentError as exc:
                if not _needs_channel(exc):
                    raise
                cause, failed_on = exc, link.channel_id
            else:
                owed = 0 if link.channel is not None else await self.payer.balance_due(link)
                if not owed:
                    if more:
                        self._fund_ahead_if_due(link, kind, more)
                    return paid.answer, paid.signed
        if owed:
            # Balance mode: this request (or requests beside it) made a payment due and there is no channel
            # to pay through; open one and pay now, not at some next request (§Service balance, rule 3).
            await self._reopen(session, RemotePaymentError(
                PaymentErrorCode.INSUFFICIENT_PAYMENT, "a balance payment is due and no channel is open",
                owed=owed), None)
            async with self._inside(session) as link:
                settled = await self.payer.settle_balance(link)
                if tally is not None:
                    tally.signed += settled
                return paid.answer, paid.signed + settled
        await self._reopen(session, cause, failed_on)
        async with self._inside(session) as link:
            paid = await self.payer.request(link, kind, address, data, size=size, tally=tally)
            return paid.answer, paid.signed

    async def _reopen(self, session: Session, cause: PaymentError, failed_on: ChannelId | None) -> None:
        """After a request failed with ``cause`` on channel ``failed_on`` (None: none): open a new channel,
        unless another request already did since.

        Raises:
            ``cause``: the link still has the channel that refused it, or the budget of opens is spent.
        """
        gate = self._gates[session.peer_node_id]
        async with gate.lock:
            link = await self._current_link(session, gate)
            if link.channel_id != failed_on:
                return  # another request opened one meanwhile: try again on it
            if link.channel is not None:
                raise cause
            if channel_refused(cause.code):
                log.info("host %s refused our channel (%s): opening a new one", link.host.hex(), cause)
            await self._open_channel(link, cause)

    async def renew(self, session: Session, address: bytes, data: bytes, renewal: bytes) -> int:
        """Pay the host to keep a chunk it holds for another retention period (specs/erasure.md §9); sats sent."""
        _, sats = await self.request(session, Kind.RENEW, renewal, RenewalPut(address=address, data=data))
        return sats

    async def audit(self, session: Session, challenge: AuditChallenge) -> tuple[bytes, int]:
        """Pay the host for an audit whose probe passed (specs/erasure.md §7.4 Paid audits); (proof, sats sent)."""
        proof, sats = await self.request(session, Kind.AUDIT, challenge.nonce, challenge)
        assert isinstance(proof, bytes)
        return proof, sats

    async def put(self, session: Session, address: bytes, data: bytes) -> None:
        """Store a chunk on the host, paying its storage price (for the uploader)."""
        await self.request(session, Kind.PUT, address, data)
