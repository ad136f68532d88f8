"""The node's SQLite ledger: channels, payments, accounts, settlements.

Opened in WAL mode with ``synchronous=FULL`` so a committed payment survives
kill -9 and power loss; writes go through one connection and are group
committed (``_commit.py``); reads use a second connection.  Every method is
synchronous and thread-safe: trio code calls them through
``trio.to_thread.run_sync``.  (specs/payments.md §Ledger.)
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.ledger import _reports
from node.ledger._commit import GroupCommitter
from node.ledger._schema import migrate
from protocol.payments.balance import PeerBalance
from protocol.payments.payee import RecordChain
from protocol.payments.vocabulary import ChannelStatus, Direction, Kind, Role, SettlementKind, SettlementStatus

CHANNEL_STATES = tuple(ChannelStatus)
LEDGER_FILE = "ledger.sqlite3"
# How long a connection waits for a lock held by another process.
BUSY_TIMEOUT_MS = 10_000


class LedgerError(Exception):
    """A write the ledger refuses (the database is unchanged)."""


class StaleTotal(LedgerError):
    """A payment's total is not above the channel's recorded total (a replay)."""


class UnknownChannel(LedgerError):
    """No channel with that id is recorded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelRecord:
    """One channel as the ledger stores it."""

    channel_id: str
    role: Role
    peer: str
    state: ChannelStatus
    capacity: int
    total: int
    payer_sig: bytes | None
    funding_txid: str
    funding_vout: int
    expiry: int
    params: bytes
    opened_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """What one peer has consumed and paid, seen from one direction."""

    consumed: int = 0
    paid: int = 0
    last_chunk: str | None = None
    last_kind: Kind | None = None
    # The latest charges (chunk hex, kind), oldest first (``account(recent=n)``).
    recent: tuple[tuple[str, Kind], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRecord:
    """One charged request (``amount`` may be 0 inside the free allowance)."""

    id: int
    peer: str
    direction: Direction
    kind: Kind
    chunk: str
    price: int
    amount: int
    channel_id: str | None
    total: int | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SettlementRecord:
    """One close or refund transaction of a channel, as the ledger stores it."""

    channel_id: str
    kind: SettlementKind
    txid: str
    amount: int
    state: SettlementStatus
    height: int | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentEntry:
    """A charged request to record (``record_payments``): ``record_payment``'s arguments as one value."""

    peer: str
    direction: Direction
    kind: Kind
    chunk: str
    price: int
    amount: int
    channel_id: str | None = None
    total: int | None = None
    payer_sig: bytes | None = None
    now: float | None = None


_BALANCE_FIELDS = ("given", "taken", "paid_out", "paid_in", "acked_given", "acked_paid_out")
_BALANCE_COLUMNS = ", ".join(_BALANCE_FIELDS)

_CHANNEL_COLUMNS = (
    "channel_id, role, peer, state, capacity, total, payer_sig, funding_txid, "
    "funding_vout, expiry, params, opened_at, updated_at"
)


def _channel(row: tuple[Any, ...]) -> ChannelRecord:
    (cid, role, peer, state, capacity, total, sig, txid, vout, expiry, params, opened, updated) = row
    return ChannelRecord(
        channel_id=cid, role=Role(role), peer=peer, state=ChannelStatus(state), capacity=capacity, total=total,
        payer_sig=bytes(sig) if sig is not None else None, funding_txid=txid, funding_vout=vout,
        expiry=expiry, params=bytes(params), opened_at=opened, updated_at=updated,
    )


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves (group commit).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Ledger:
    """The ledger of one node.  Use ``Ledger.open(path)``; ``close()`` when done."""

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._read_lock = threading.Lock()
        self._commits = GroupCommitter(writer)
        # Only asks ``data_version``: never waits behind a long read.
        self._version_conn = _connect(path)
        self._version_lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> Ledger:
        """Open (creating and migrating if needed) the ledger at ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(path)
        migrate(writer)
        return cls(path, writer, _connect(path))

    def close(self) -> None:
        """Close both connections; later calls raise."""
        self._commits.close()
        with self._read_lock:
            self._reader.close()
        with self._version_lock:
            self._version_conn.close()
        self._writer.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def commits(self) -> int:
        """Transactions committed so far (group commit makes it < writes)."""
        return self._commits.commits

    def version(self) -> int:
        """A number that changes whenever anyone commits to the ledger: two calls that agree saw no write between.

        This process's writes and another's (``mu channels close``) alike:
        SQLite's ``PRAGMA data_version`` on a connection that never writes,
        a look at the WAL index, not a table read.
        """
        with self._version_lock:
            return int(self._version_conn.execute("PRAGMA data_version").fetchone()[0])

    # -- reads ---------------------------------------------------------------

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    def channel(self, channel_id: str) -> ChannelRecord | None:
        """The channel ``channel_id``, or None."""
        rows = self._read(f"SELECT {_CHANNEL_COLUMNS} FROM channels WHERE channel_id = ?", (channel_id,))
        return _channel(rows[0]) if rows else None

    def channels(self, *, peer: str | None = None, role: Role | None = None,
                 states: tuple[ChannelStatus, ...] | None = None) -> list[ChannelRecord]:
        """Channels matching every given filter, oldest first."""
        where, args = [], []
        if peer is not None:
            where.append("peer = ?")
            args.append(peer)
        if role is not None:
            where.append("role = ?")
            args.append(role)
        if states is not None:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(f"SELECT {_CHANNEL_COLUMNS} FROM channels{clause} ORDER BY opened_at, channel_id", tuple(args))
        return [_channel(r) for r in rows]

    def account(self, peer: str, direction: Direction, *, recent: int = 0) -> Account:
        """The running account of ``peer`` in ``direction`` (``IN``: we serve).

        With ``recent``, also that many of its latest charges (payment rows,
        free ones included), which a payee redelivers without a new charge.
        """
        rows = self._read(
            "SELECT consumed, paid, last_chunk, last_kind FROM accounts WHERE peer = ? AND direction = ?",
            (peer, direction),
        )
        if not rows:
            return Account()
        consumed, paid, last_chunk, last_kind = rows[0]
        latest: tuple[tuple[str, Kind], ...] = ()
        if recent > 0:
            charges = self._read(
                "SELECT chunk, kind FROM payments WHERE peer = ? AND direction = ? ORDER BY id DESC LIMIT ?",
                (peer, direction, int(recent)),
            )
            latest = tuple((chunk, Kind(kind)) for chunk, kind in reversed(charges))
        return Account(consumed=consumed, paid=paid, last_chunk=last_chunk,
                       last_kind=Kind(last_kind) if last_kind is not None else None, recent=latest)

    def payments(self, *, peer: str | None = None, channel_id: str | None = None, limit: int | None = None) -> list[PaymentRecord]:
        """Payments, oldest first, optionally filtered."""
        where, args = [], []
        if peer is not None:
            where.append("peer = ?")
            args.append(peer)
        if channel_id is not None:
            where.append("channel_id = ?")
            args.append(channel_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        rows = self._read(
            "SELECT id, peer, direction, kind, chunk, price, amount, channel_id, total, at "
            f"FROM payments{clause} ORDER BY id{tail}",
            tuple(args),
        )
        return [
            PaymentRecord(id=r[0], peer=r[1], direction=Direction(r[2]), kind=Kind(r[3]), chunk=r[4], price=r[5],
                          amount=r[6], channel_id=r[7], total=r[8], at=r[9])
            for r in rows
        ]

    def settlements(self, channel_id: str | None = None) -> list[SettlementRecord]:
        """Settlements (closes and refunds), oldest first."""
        clause, args = ("WHERE channel_id = ?", (channel_id,)) if channel_id else ("", ())
        rows = self._read(
            f"SELECT channel_id, kind, txid, amount, state, height, at FROM settlements {clause} ORDER BY id", args
        )
        return [SettlementRecord(channel_id=cid, kind=SettlementKind(kind), txid=txid, amount=amount,
                                 state=SettlementStatus(state), height=height, at=at)
                for cid, kind, txid, amount, state, height, at in rows]

    # -- writes --------------------------------------------------------------

    def add_channel(self, record: ChannelRecord) -> None:
        """Persist a new channel.

        Raises:
            LedgerError: a channel with that id already exists.
        """
        self.add_channels([record])

    def add_channels(self, records: list[ChannelRecord]) -> None:
        """Persist new channels in one transaction (the channels one funding transaction opened).

        Raises:
            LedgerError: a channel with one of those ids already exists (none is recorded).
        """
        for record in records:
            if record.state not in CHANNEL_STATES or record.role not in tuple(Role):
                raise LedgerError(f"bad channel role/state {record.role}/{record.state}")

        def write(conn: sqlite3.Connection) -> None:
            for record in records:
                try:
                    conn.execute(
                        f"INSERT INTO channels ({_CHANNEL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (record.channel_id, record.role, record.peer, record.state, record.capacity, record.total,
                         record.payer_sig, record.funding_txid, record.funding_vout, record.expiry, record.params,
                         record.opened_at, record.updated_at),
                    )
                except sqlite3.IntegrityError as exc:
                    raise LedgerError(f"channel {record.channel_id} already recorded") from exc

        self._commits.submit(write)

    def set_channel_state(self, channel_id: str, state: ChannelStatus, *, now: float | None = None) -> None:
        """Move a channel to ``state`` (one of CHANNEL_STATES)."""
        if state not in CHANNEL_STATES:
            raise LedgerError(f"unknown channel state {state!r}")
        at = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE channels SET state = ?, updated_at = ? WHERE channel_id = ?", (state, at, channel_id))
            if cur.rowcount != 1:
                raise UnknownChannel(channel_id)

        self._commits.submit(write)

    def abandon_payer_channel(self, channel_id: str, *, acknowledged: int, now: float | None = None) -> int:
        """Give up our payer channel ``channel_id`` the payee refused: mark it ``closing`` (if still
        ``open``: the watcher may have seen it ``closed`` on chain already) and take back our payments on
        it above ``acknowledged``; return the sats taken back.

        In one transaction: the payment rows of ours on it whose total is
        above ``acknowledged`` (the payee refused them, never recorded them)
        are deleted and our account of the peer loses their price and
        amount, so ``spent`` counts only what the payee recorded; the
        channel's total goes back to ``acknowledged``.  The watcher refunds
        the channel after its expiry, or marks it ``closed`` once the payee's
        close spends the funding (specs/payments.md §Channel recovery).

        Raises:
            UnknownChannel: no payer channel ``channel_id`` is recorded.
        """
        return self._take_back(channel_id, acknowledged, now, closing=True)

    def take_back_unrecorded(self, channel_id: str, *, recorded: int, now: float | None = None) -> int:
        """Take back our payments on payer channel ``channel_id`` above the total the payee ``recorded``
        (its CHANNEL_STATE on a new session: they never reached its ledger); return the sats taken back.

        As :meth:`abandon_payer_channel`, but the channel stays ``open``: our
        next payment signs that total again for new chunks (specs/payments.md
        §After a crash), and is recorded then.

        Raises:
            UnknownChannel: no payer channel ``channel_id`` is recorded.
        """
        return self._take_back(channel_id, recorded, now, closing=False)

    def _take_back(self, channel_id: str, acknowledged: int, now: float | None, *, closing: bool) -> int:
        at = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT peer, total FROM channels WHERE channel_id = ? AND role = ?",
                               (channel_id, Role.PAYER)).fetchone()
            if row is None:
                raise UnknownChannel(channel_id)
            peer, total = row
            refused = conn.execute(
                "SELECT COALESCE(SUM(price), 0), COALESCE(SUM(amount), 0) FROM payments "
                "WHERE channel_id = ? AND direction = ? AND total > ?", (channel_id, Direction.OUT, acknowledged),
            ).fetchone()
            conn.execute("DELETE FROM payments WHERE channel_id = ? AND direction = ? AND total > ?",
                         (channel_id, Direction.OUT, acknowledged))
            conn.execute("UPDATE accounts SET consumed = MAX(0, consumed - ?), paid = MAX(0, paid - ?) "
                         "WHERE peer = ? AND direction = ?", (refused[0], refused[1], peer, Direction.OUT))
            kept = min(total, acknowledged)
            state = ChannelStatus.CLOSING if closing else ChannelStatus.OPEN
            conn.execute(
                "UPDATE channels SET state = CASE WHEN state = ? THEN ? ELSE state END, total = ?, "
                "payer_sig = CASE WHEN total = ? THEN payer_sig END, updated_at = ? WHERE channel_id = ?",
                (ChannelStatus.OPEN, state, kept, kept, at, channel_id))
            return int(refused[1])

        taken_back: int = self._commits.submit(write)
        return taken_back

    def record_payment(
        self,
        *,
        peer: str,
        direction: str,
        kind: str,
        chunk: str,
        price: int,
        amount: int,
        channel_id: str | None = None,
        total: int | None = None,
        payer_sig: bytes | None = None,
        now: float | None = None,
    ) -> PaymentRecord:
        """Record one charged request durably; return when it is on disk.

        In one transaction: the payment row, the peer's account (consumed +=
        price, paid += amount) and, for a channel payment, the channel's
        total and latest payer signature.  A channel payment whose total is
        not above the recorded total is refused, which makes the ledger the
        last line against replays across restarts.

        Raises:
            StaleTotal: ``total`` is not above the channel's recorded total.
            UnknownChannel: ``channel_id`` is not recorded.
            LedgerError: inconsistent arguments.
        """
        result: PaymentRecord = self._commits.submit(self._payment_write(
            peer=peer, direction=direction, kind=kind, chunk=chunk, price=price, amount=amount,
            channel_id=channel_id, total=total, payer_sig=payer_sig, now=now))
        return result

    def _payment_write(
        self, *, peer: str, direction: str, kind: str, chunk: str, price: int, amount: int,
        channel_id: str | None = None, total: int | None = None, payer_sig: bytes | None = None,
        now: float | None = None,
    ) -> Callable[[sqlite3.Connection], PaymentRecord]:
        """The write of one payment (see ``record_payment``); raises LedgerError on bad arguments."""
        if direction not in ("in", "out") or kind not in tuple(Kind) or price < 0 or amount < 0:
            raise LedgerError("bad payment direction, kind or amount")
        if (channel_id is None) != (total is None) or (channel_id is None and amount != 0):
            raise LedgerError("a paid amount needs a channel and its new total")
        at = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> PaymentRecord:
            # Refused (LedgerError) before anything is written, so a refusal
            # needs no rollback of its own (``record_payments``).
            if channel_id is not None:
                # The replay check and the new total in one statement; a row
                # left unchanged says which refusal it is.
                moved = conn.execute(
                    "UPDATE channels SET total = ?, payer_sig = ?, updated_at = ? WHERE channel_id = ? AND total < ?",
                    (total, payer_sig, at, channel_id, total),
                ).rowcount
                if moved == 0:
                    row = conn.execute("SELECT total FROM channels WHERE channel_id = ?", (channel_id,)).fetchone()
                    if row is None:
                        raise UnknownChannel(channel_id)
                    raise StaleTotal(f"total {total} is not above recorded {row[0]} on {channel_id}")
            cur = conn.execute(
                "INSERT INTO payments (peer, direction, kind, chunk, price, amount, channel_id, total, at) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (peer, direction, kind, chunk, price, amount, channel_id, total, at),
            )
            conn.execute(
                "INSERT INTO accounts (peer, direction, consumed, paid, last_chunk, last_kind) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (peer, direction) DO UPDATE SET consumed = consumed + excluded.consumed, "
                "paid = paid + excluded.paid, last_chunk = excluded.last_chunk, last_kind = excluded.last_kind",
                (peer, direction, price, amount, chunk, kind),
            )
            return PaymentRecord(id=int(cur.lastrowid or 0), peer=peer, direction=Direction(direction), kind=Kind(kind), chunk=chunk,
                                 price=price, amount=amount, channel_id=channel_id, total=total, at=at)

        return write

    def record_payments(self, entries: Sequence[PaymentEntry], *, chained: bool = False,
                        now: float | None = None) -> list[PaymentRecord | LedgerError]:
        """Record several charged requests, in order,
        in one committed transaction; return when it is on disk.

        A refused entry (its LedgerError is returned in its place) is refused
        before it writes anything, so it undoes nothing of the others.  ``chained``
        (the payee's grouped records, specs/payments.md §Ledger "Grouped
        host commits"): an entry of a peer after a refused one of the same
        peer is refused too, unwritten, since it was decided on the state
        the refused one would have left.  ``now``: the time of every entry
        without its own.
        """
        writes = [self._payment_write(
            peer=e.peer, direction=e.direction, kind=e.kind, chunk=e.chunk, price=e.price, amount=e.amount,
            channel_id=e.channel_id, total=e.total, payer_sig=e.payer_sig, now=now if e.now is None else e.now)
            for e in entries]

        def write(conn: sqlite3.Connection) -> list[PaymentRecord | LedgerError]:
            results: list[PaymentRecord | LedgerError] = []
            chain = RecordChain()
            for entry, one in zip(entries, writes):
                if chained and not chain.may_write(entry.peer):
                    results.append(LedgerError(f"an earlier record of peer {entry.peer[:12]} in its group failed"))
                    continue
                # No savepoint per entry: a refused one has written nothing
                # (``_payment_write``); any other error fails the whole write.
                try:
                    results.append(one(conn))
                except LedgerError as exc:
                    results.append(exc)
                    chain.failed(entry.peer)
            return results

        outcome: list[PaymentRecord | LedgerError] = self._commits.submit(write)
        return outcome

    def record_settlement(
        self, *, channel_id: str, kind: SettlementKind, txid: str, amount: int,
        state: SettlementStatus = SettlementStatus.BROADCAST,
        height: int | None = None, now: float | None = None,
    ) -> None:
        """Record (or update, by txid) a close or refund transaction."""
        at = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO settlements (channel_id, kind, txid, amount, state, height, at) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT (txid) DO UPDATE SET state = excluded.state, height = excluded.height",
                (channel_id, kind, txid, amount, state, height, at),
            )

        self._commits.submit(write)

    # -- service balances (specs/payments.md §Service balance) ---------------

    def balance(self, peer: str) -> PeerBalance:
        """Our recorded balance with ``peer`` (all zero when none is recorded)."""
        rows = self._read(f"SELECT {_BALANCE_COLUMNS} FROM balances WHERE peer = ?", (peer,))
        return PeerBalance(**dict(zip(_BALANCE_FIELDS, rows[0]))) if rows else PeerBalance()

    def settled_in(self, peer: str) -> int:
        """Sats ``peer`` paid us settling its service balance (payments of kind settle received)."""
        rows = self._read("SELECT COALESCE(SUM(amount), 0) FROM payments WHERE peer = ? AND direction = 'in' "
                          "AND kind = 'settle'", (peer,))
        return int(rows[0][0])

    def record_balance(self, peer: str, balance: PeerBalance, *, now: float | None = None) -> None:
        """Write ``balance`` as our view of ``peer``'s; return once it is on disk.

        The whole view is written each time, so what is acknowledged lazily
        goes to disk with the next step that must be durable (§Service
        balance, "State"); steps of different peers share group commits.
        """
        at = time.time() if now is None else now
        values = tuple(getattr(balance, name) for name in _BALANCE_FIELDS)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO balances (peer, {_BALANCE_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?,?) "
                "ON CONFLICT (peer) DO UPDATE SET given = excluded.given, taken = excluded.taken, "
                "paid_out = excluded.paid_out, paid_in = excluded.paid_in, acked_given = excluded.acked_given, "
                "acked_paid_out = excluded.acked_paid_out, updated_at = excluded.updated_at",
                (peer, *values, at))

        self._commits.submit(write)

    # -- reports -------------------------------------------------------------

    def earnings(self) -> dict[str, Any]:
        """Earned / pending / settled sats, per peer and per day (`mu earnings`)."""
        return _reports.earnings(self._read)

    def export(self) -> dict[str, Any]:
        """Everything in the ledger as JSON-ready values (`mu ledger --json`)."""
        return _reports.export(self._read)
