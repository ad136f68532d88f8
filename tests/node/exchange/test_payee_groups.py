"""The payee's grouped records (specs/payments.md §Ledger, "Grouped host commits"), in process.

A real SQLite ledger under ``PayeeBook``: a window of one peer's paid
requests is decided before any of its records commits and the records go
to disk in groups; nothing is answered before its group commits; a group
that fails fails every record in it and queued behind it, and the book
goes back to the ledger's state, on which the payer's next payments are
decided and recorded.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from node.exchange._chain import ChainView
from node.exchange._channels import params_to_blob
from node.exchange._payee import PayeeBook, StagedCharge
from node.ledger import ChannelRecord, Ledger, LedgerError, PaymentEntry
from protocol.bitcoin import OutPoint, PrivateKey
from protocol.bitcoin.channel import ChannelParams, PayerChannel
from protocol.payments import MIB, Kind, LocalPaymentError, Terms
from protocol.payments.messages import ChannelId, Payment
from protocol.payments.vocabulary import ChannelStatus, Direction, Role

PAYEE_KEY = PrivateKey.from_seed(b"groups-payee")
PAYER_KEY = PrivateKey.from_seed(b"groups-payer")
PRICE = 100  # a GET of one MiB at 100 sats per MiB
ALLOWANCE = 250
TERMS = Terms(price_per_mib_get=PRICE, price_per_mib_put=300, retention_seconds=86_400, free_allowance=ALLOWANCE,
              min_capacity=20_000, expiry_window=144, min_confirmations=1, fee_rate=2,
              payment_pubkey=PAYEE_KEY.public_key.data, identity_key=bytes(32))
CID = ChannelId(bytes(range(32)), 1)
EXPIRY = 1_000
PARAMS = ChannelParams(funding_outpoint=OutPoint(CID.txid, CID.vout), capacity=100_000, payer=PAYER_KEY.public_key,
                       payee=PAYEE_KEY.public_key, expiry_height=EXPIRY, fee_rate=2)
SIGNER = PayerChannel(PARAMS, PAYER_KEY)
PEER = bytes.fromhex("aa" * 32)
WINDOW = 8


class Chain:
    """The chain backend's tip, far from the channel's deadline."""

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "getblockcount"
        return 500


def open_book(ledger: Ledger) -> PayeeBook:
    ledger.add_channel(ChannelRecord(
        channel_id=str(CID), role=Role.PAYEE, peer=PEER.hex(), state=ChannelStatus.OPEN, capacity=PARAMS.capacity,
        total=0, payer_sig=None, funding_txid=CID.txid[::-1].hex(), funding_vout=CID.vout, expiry=EXPIRY,
        params=params_to_blob(PARAMS), opened_at=0.0, updated_at=0.0))
    return PayeeBook(ledger=ledger, terms=TERMS, payee_key=PAYEE_KEY, chain=ChainView(Chain()))


def paying(total: int) -> dict[str, object]:
    return Payment(channel=CID, total=total, sig=SIGNER.sign(total).signature).to_wire()


async def stage(book: PayeeBook, index: int, total: int | None) -> StagedCharge:
    return await book.stage(PEER, kind=Kind.GET, chunk=index.to_bytes(32, "big"), size=MIB,
                            payment=None if total is None else paying(total))


async def test_a_window_is_decided_ahead_and_recorded_in_groups(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        book = open_book(ledger)
        # Two requests within the allowance, then each pays the 100 sats it owes, on the total before it.
        totals = [None, None, *[PRICE * n for n in range(1, 31)]]
        answered: list[int] = []
        async with trio.open_nursery() as nursery:
            for index, total in enumerate(totals):
                staged = await stage(book, index, total)  # decided before the one before it is on disk

                async def answer(staged: StagedCharge = staged, index: int = index) -> None:
                    await book.committed(staged)
                    answered.append(index)

                nursery.start_soon(answer)
        assert sorted(answered) == list(range(len(totals)))
        assert book.journal.groups < len(totals)  # records went to disk several at a time
        record = ledger.channel(str(CID))
        account = ledger.account(PEER.hex(), Direction.IN)
        payments = ledger.payments()
    assert record is not None and record.total == 30 * PRICE == sum(p.amount for p in payments)
    assert (account.consumed, account.paid) == (32 * PRICE, 30 * PRICE)
    assert len({p.at for p in payments}) == book.journal.groups  # a group's rows share their time


async def test_no_request_of_a_failed_group_is_answered_and_the_next_ones_build_on_the_ledger(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        book = open_book(ledger)
        await book.committed(await stage(book, 0, None))
        await book.committed(await stage(book, 1, None))
        await book.committed(await stage(book, 2, PRICE))
        record_payments = ledger.record_payments
        failures = [sqlite3.OperationalError("database or disk is full")]

        def full_once(entries: Sequence[PaymentEntry], *, chained: bool = False, now: float | None = None) -> object:
            if failures:
                raise failures.pop()
            return record_payments(entries, chained=chained, now=now)

        ledger.record_payments = full_once  # type: ignore[method-assign, assignment]
        # A window decided on the state each leaves: totals 200..200 + 100 * (WINDOW - 1).
        window = [await stage(book, 3 + n, PRICE * (2 + n)) for n in range(WINDOW)]
        errors: list[Exception] = []
        answered: list[StagedCharge] = []
        async with trio.open_nursery() as nursery:
            for staged in window:

                async def answer(staged: StagedCharge = staged) -> None:
                    try:
                        await book.committed(staged)
                        answered.append(staged)
                    except (sqlite3.Error, LedgerError) as exc:
                        errors.append(exc)

                nursery.start_soon(answer)
        assert answered == [] and len(errors) == WINDOW  # the group failed whole: nothing served
        state = await book.channel_state(PEER, CID)
        assert (state.total, state.consumed, state.paid) == (PRICE, 3 * PRICE, PRICE)  # the ledger's again
        # The payer resynchronises and pays on from there: a total the failed group held is taken again.
        await book.committed(await stage(book, 3, 2 * PRICE))
        record = ledger.channel(str(CID))
        payments = ledger.payments()
    assert record is not None and record.total == 2 * PRICE == sum(p.amount for p in payments)
    assert [p.chunk for p in payments][-1] == (3).to_bytes(32, "big").hex()


@pytest.mark.parametrize("refused", [0, 3])
async def test_a_refused_record_stops_its_peer_and_the_rest_commits(tmp_path: Path, refused: int) -> None:
    """The ledger refuses one record of a window (its total not above the stored one): the records
    before it commit and are answered, it and every later one fail, and the book is the ledger's."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        book = open_book(ledger)
        await book.committed(await stage(book, 0, None))
        await book.committed(await stage(book, 1, None))
        record_payments = ledger.record_payments
        bad_chunk = (2 + refused).to_bytes(32, "big").hex()

        def one_stale(entries: Sequence[PaymentEntry], *, chained: bool = False, now: float | None = None) -> object:
            entries = [dataclasses.replace(e, total=0) if e.chunk == bad_chunk else e for e in entries]
            return record_payments(entries, chained=chained, now=now)

        ledger.record_payments = one_stale  # type: ignore[method-assign, assignment]
        window = [await stage(book, 2 + n, PRICE * (1 + n)) for n in range(6)]
        outcomes: dict[int, str] = {}
        async with trio.open_nursery() as nursery:
            for n, staged in enumerate(window):

                async def answer(n: int = n, staged: StagedCharge = staged) -> None:
                    try:
                        await book.committed(staged)
                        outcomes[n] = "answered"
                    except (LocalPaymentError, LedgerError) as exc:
                        outcomes[n] = type(exc).__name__

                nursery.start_soon(answer)
        assert [outcomes[n] for n in range(refused)] == ["answered"] * refused
        assert outcomes[refused] == "LocalPaymentError"  # PAYMENT_REPLAY, the ledger's own replay check
        assert all(outcomes[n] == "LedgerError" for n in range(refused + 1, 6))
        state = await book.channel_state(PEER, CID)
        record = ledger.channel(str(CID))
    assert record is not None and state.total == record.total == PRICE * refused


async def test_channel_state_reports_what_is_on_disk(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        book = open_book(ledger)
        staged = [await stage(book, index, total) for index, total in enumerate([None, None, PRICE, 2 * PRICE])]
        state = await book.channel_state(PEER, CID)  # waits for the records queued before it
        record = ledger.channel(str(CID))
        account = ledger.account(PEER.hex(), Direction.IN)
        assert record is not None and (state.total, state.consumed, state.paid) == (
            record.total, account.consumed, account.paid) == (2 * PRICE, 4 * PRICE, 2 * PRICE)
        assert [await book.committed(s) for s in staged] == [0, 0, PRICE, PRICE]


async def test_a_writer_cancelled_while_its_group_waits_leaves_the_group_to_the_next(tmp_path: Path) -> None:
    """The request that would write a group is cancelled (its session closed) while the group waits
    for a request still being read: nothing is taken, and the next waiter writes the group."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        book = open_book(ledger)
        with book.coming():  # a request still being read: the group waits for it
            staged = await stage(book, 0, None)
            with trio.CancelScope() as scope:
                scope.cancel()
                await book.committed(staged)
            assert not scope.cancelled_caught or staged.record is not None and not staged.record.done.is_set()
        with trio.fail_after(10):
            assert await book.committed(staged) == 0
        assert ledger.account(PEER.hex(), Direction.IN).consumed == PRICE
