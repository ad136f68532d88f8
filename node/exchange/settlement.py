"""The settlement watcher: earnings onto the chain, refunds back to the payer.

``serve_settlement`` runs in the node's nursery and, every
``poll_seconds`` (specs/payments.md §Settlement):

- refreshes the tip height the payee's payment checks use;
- wakes at once when a payment brings a channel to ``settle_threshold``
  (the payee takes no more payments on it from then on);
- payee side: closes each open channel with a payment when the tip reaches
  one block before its close deadline, when its total reaches
  ``settle_threshold``, or when ``mu channels close ID`` marked it
  ``closing``: the channel is marked ``closing``, the co-signed commitment
  is sent with ``sendrawtransaction`` and, once the backend accepted it,
  recorded as a ``broadcast`` settlement (a crash in between is retried
  from ``closing``: the same transaction is sent again); once mined it is
  recorded ``confirmed`` with its height and the channel becomes
  ``closed`` (specs/payments.md §Settlement);
- payer side: from height ``expiry`` (the refund is final in block
  ``expiry + 1``) takes back the funding of each payer channel the payee
  has not closed, the same way (``refunding`` → ``refunded``); a payer
  channel whose funding the payee spent becomes ``closed``, before its
  expiry too, so the payer stops paying through it at once.

A pass costs one ``getblockcount`` and a look at the ledger's version when
nothing changed: the channels are read again only when the ledger changed,
and a channel is looked at again only when the tip moved since it was last
looked at, its state changed, the last look wrote something or failed, or
(payee) a payment brought one to the threshold (specs/payments.md
§Settlement, "What a pass looks at").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from node.exchange._chain import ChainView
from node.exchange._channels import params_from_blob
from node.exchange._payee import PayeeBook
from node.ledger import ChannelRecord, Ledger, SettlementRecord
from node.bitcoin.rpc import RPC_VERIFY_ALREADY_IN_CHAIN, RPCError, RPCTransportError
from protocol.bitcoin import PrivateKey, Transaction
from protocol.bitcoin.channel import NothingToCloseError, refund_transaction, refund_vsize
from protocol.bitcoin.policy import min_relay_fee
from protocol.payments.messages import ChannelId
from protocol.payments.vocabulary import ChannelStatus, Role, SettlementKind, SettlementStatus

log = logging.getLogger("mu.settlement")

DEFAULT_POLL_SECONDS = 2.0
DEFAULT_SETTLE_THRESHOLD = 100_000
# Refund fee rate, sat/vB (the refund is the payer's own transaction).
REFUND_FEE_RATE = 2


@dataclass(slots=True)
class SettlementConfig:
    """Knobs of the watcher (node options)."""

    settle_threshold: int = DEFAULT_SETTLE_THRESHOLD
    poll_seconds: float = DEFAULT_POLL_SECONDS


class SettlementWatcher:
    """One pass at a time over the ledger's channels; see the module docstring."""

    def __init__(self, *, ledger: Ledger, chain: ChainView, book: PayeeBook | None, payer_key: PrivateKey | None,
                 refund_script: bytes | None, config: SettlementConfig) -> None:
        self.ledger = ledger
        self.chain = chain
        self.book = book
        self.payer_key = payer_key
        self.refund_script = refund_script
        self.config = config
        if book is not None:
            # The payee refuses payments past the threshold and wakes us when
            # one reaches it (specs/payments.md §Settlement).
            book.settle_threshold = config.settle_threshold
        self.passes = 0
        self.pass_done = trio.Event()  # set after each pass, then replaced
        self._ledger_version: int | None = None
        self._channels: list[ChannelRecord] = []
        # (tip, state) at the last look that found nothing to do, by channel id.
        self._looked: dict[str, tuple[int, ChannelStatus]] = {}
        self._wrote: set[str] = set()  # channels this pass changed in the ledger

    async def run_once(self) -> None:
        """Do one watcher pass (also what ``serve`` repeats)."""
        tip = await self.chain.tip_height()
        threshold_reached = False
        if self.book is not None:
            self.book.set_tip(tip)
            # Which channel reached its threshold is the book's to know: a
            # wake-up looks at every payee channel once.
            threshold_reached = self.book.settle_due.is_set()
            self.book.settle_due = trio.Event()
        version = self.ledger.version()  # on this thread: a look at SQLite's WAL index, no table read
        if version != self._ledger_version:
            self._channels = await trio.to_thread.run_sync(
                lambda: self.ledger.channels(states=(ChannelStatus.OPEN, ChannelStatus.CLOSING, ChannelStatus.REFUNDING)))
            self._ledger_version = version
            ids = {record.channel_id for record in self._channels}
            self._looked = {cid: seen for cid, seen in self._looked.items() if cid in ids}
        self._wrote.clear()
        for record in self._channels:
            cid = record.channel_id
            # A close or refund is final only once mined, and a payee's
            # deadline is a height: nothing to learn before the tip moves
            # (specs/payments.md §Settlement, "What a pass looks at").
            if self._looked.get(cid) == (tip, record.state) and not (threshold_reached and record.role is Role.PAYEE):
                continue
            self._looked.pop(cid, None)  # looked at again next pass unless this look ends quietly
            try:
                if record.role is Role.PAYEE:
                    await self._payee(record, tip)
                else:
                    await self._payer(record, tip)
            except (RPCError, RPCTransportError) as exc:
                log.warning("settlement of %s deferred: %s", cid, exc)
                continue
            except Exception:  # one damaged channel must not stop the watcher for the others
                log.exception("settlement of %s failed; retried next pass", cid)
                continue
            if cid not in self._wrote:
                self._looked[cid] = (tip, record.state)
        self.passes += 1
        done, self.pass_done = self.pass_done, trio.Event()
        done.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run passes forever (chain errors are logged and retried next pass)."""
        task_status.started()
        while True:
            try:
                await self.run_once()
            except (RPCError, RPCTransportError) as exc:
                log.warning("settlement pass failed: %s", exc)
            if self.book is None:
                await trio.sleep(self.config.poll_seconds)  # a poll interval, not synchronisation
                continue
            with trio.move_on_after(self.config.poll_seconds):  # a poll interval, or a channel at its threshold
                await self.book.settle_due.wait()  # cleared by the pass that handles it

    async def _set_state(self, channel_id: str, state: ChannelStatus) -> None:
        self._wrote.add(channel_id)
        await trio.to_thread.run_sync(self.ledger.set_channel_state, channel_id, state)

    async def _record_settlement(self, channel_id: str, kind: SettlementKind, txid: str, amount: int, *,
                                 state: SettlementStatus = SettlementStatus.BROADCAST, height: int | None = None) -> None:
        self._wrote.add(channel_id)
        await trio.to_thread.run_sync(lambda: self.ledger.record_settlement(
            channel_id=channel_id, kind=kind, txid=txid, amount=amount, state=state, height=height))

    async def _settlement(self, channel_id: str) -> SettlementRecord | None:
        rows = await trio.to_thread.run_sync(self.ledger.settlements, channel_id)
        return rows[-1] if rows else None

    async def _follow(self, record: ChannelRecord, settlement: SettlementRecord, final_state: ChannelStatus) -> None:
        txid = settlement.txid
        known, height = await self.chain.confirmation_height(txid)
        if height is not None:
            await self._record_settlement(record.channel_id, settlement.kind, txid, settlement.amount,
                                          state=SettlementStatus.CONFIRMED, height=height)
            await self._set_state(record.channel_id, final_state)
            log.info("%s of %s confirmed at height %d", settlement.kind, record.channel_id, height)
        elif not known:
            log.warning("%s %s of %s is unknown to the chain backend", settlement.kind, txid, record.channel_id)

    async def _broadcast(self, raw_hex: str) -> None:
        try:
            await self.chain.broadcast(raw_hex)
        except RPCError as exc:
            if exc.code != RPC_VERIFY_ALREADY_IN_CHAIN:
                raise

    async def _payee(self, record: ChannelRecord, tip: int) -> None:
        assert self.book is not None
        settlement = await self._settlement(record.channel_id)
        if settlement is not None:
            await self._follow(record, settlement, ChannelStatus.CLOSED)
            return
        await self.book.settled()  # close on a total that is on disk (specs/payments.md §Ledger)
        entry = await self.book.entry(ChannelId.parse(record.channel_id))
        total = entry.channel.total
        due = tip + 1 >= entry.deadline or total >= self.config.settle_threshold or record.state is ChannelStatus.CLOSING
        if not due:
            return
        if total == 0 or entry.channel.latest is None:
            if tip + 1 >= entry.deadline or record.state is ChannelStatus.CLOSING:
                # Nothing was paid: nothing to claim; the payer refunds after expiry.
                self.book.mark_closing(record.channel_id)
                await self._set_state(record.channel_id, ChannelStatus.CLOSED)
            return
        self.book.mark_closing(record.channel_id)  # no more payments on it
        total = entry.channel.total
        try:
            tx = entry.channel.close_transaction()
        except NothingToCloseError:
            # A total below the dust limit cannot have an output: nothing to claim.
            log.warning("channel %s holds %d sats, below the dust limit: closed without claiming",
                        record.channel_id, total)
            await self._set_state(record.channel_id, ChannelStatus.CLOSED)
            return
        txid = tx.txid_hex()
        await self._set_state(record.channel_id, ChannelStatus.CLOSING)
        # Sent before it is recorded: a ``broadcast`` row names a transaction
        # the backend holds (specs/payments.md §Settlement).
        await self._broadcast(tx.hex())
        await self._record_settlement(record.channel_id, SettlementKind.CLOSE, txid, total)
        log.info("closing %s: %d sats in %s", record.channel_id, total, txid)

    async def _payer(self, record: ChannelRecord, tip: int) -> None:
        settlement = await self._settlement(record.channel_id)
        if settlement is not None:
            await self._follow(record, settlement, ChannelStatus.REFUNDED)
            return
        if tip < record.expiry:
            if record.state in (ChannelStatus.OPEN, ChannelStatus.CLOSING) and await self._closed_by_payee(record):
                # Noticed on chain: no more payments on it (specs/payments.md §Channel recovery).
                log.info("payer channel %s was closed by the payee", record.channel_id)
                await self._set_state(record.channel_id, ChannelStatus.CLOSED)
            return
        if self.payer_key is None or self.refund_script is None:
            return
        tx, amount = self.refund_for(record)
        txid = tx.txid_hex()
        # ``refunding`` without a settlement row: a pass sent this same
        # refund (or was about to) and stopped before recording it; if the
        # backend knows it, it spent the funding itself.
        sent = record.state is ChannelStatus.REFUNDING and (await self.chain.confirmation_height(txid))[0]
        if not sent:
            funding = await self.chain.unspent_output(record.funding_txid, record.funding_vout)
            if funding is None:
                # The payee closed it (or it never confirmed and was dropped).
                await self._set_state(record.channel_id, ChannelStatus.CLOSED)
                return
            await self._set_state(record.channel_id, ChannelStatus.REFUNDING)
        await self._broadcast(tx.hex())
        await self._record_settlement(record.channel_id, SettlementKind.REFUND, txid, amount)
        log.info("refunding %s: %d sats in %s", record.channel_id, amount, txid)

    async def _closed_by_payee(self, record: ChannelRecord) -> bool:
        """Whether the funding of payer channel ``record`` was confirmed and is now spent (the payee's close)."""
        if await self.chain.unspent_output(record.funding_txid, record.funding_vout) is not None:
            return False
        _, height = await self.chain.confirmation_height(record.funding_txid)
        return height is not None  # mined, then spent: not a funding still on its way or dropped

    def refund_for(self, record: ChannelRecord) -> tuple[Transaction, int]:
        """The refund of payer channel ``record`` and the sats it returns: the same each time it is built."""
        assert self.payer_key is not None and self.refund_script is not None
        params = params_from_blob(record.params)
        vsize = refund_vsize(params, self.refund_script)
        fee = max(min_relay_fee(vsize), REFUND_FEE_RATE * vsize)
        return refund_transaction(params, self.payer_key, self.refund_script, fee), params.capacity - fee
