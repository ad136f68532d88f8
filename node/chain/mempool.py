"""``mu chain``'s mempool: what bitcoind's AcceptToMemoryPool checks, in order.

A transaction is accepted only if it decodes, is not a coinbase, is not
already confirmed, is final for the next block (nLockTime, BIP 68), does
not conflict with the mempool (no replacement), spends outputs that exist
unspent in the chain or the mempool, spends no immature coinbase, does not
create money, pays at least the minimum relay fee, and every input's script
verifies in libbitcoinkernel with all consensus flags.  Rejections carry
bitcoind's RPC error code and reject reason (``specs/chain.md`` §4.4 Mempool acceptance and its errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import pbk
from pbk.script import PrecomputedTransactionData

from node.chain.state import COINBASE_MATURITY, ChainState, Utxo
from node.bitcoin.rpc import (
    RPC_DESERIALIZATION_ERROR,
    RPC_VERIFY_ALREADY_IN_CHAIN,
    RPC_VERIFY_ERROR,
    RPC_VERIFY_REJECTED,
)
from protocol.bitcoin.errors import BitcoinError
from protocol.bitcoin.policy import is_dust, min_relay_fee
from protocol.bitcoin.script import output_type
from protocol.bitcoin.tx import Transaction

#: Transactions the mempool holds at most.
MAX_MEMPOOL_TXS = 5_000
#: Sum of vsizes the mempool holds at most (vbytes).
MAX_MEMPOOL_VBYTES = 10_000_000
#: Bitcoin Core's MAX_STANDARD_TX_WEIGHT.
MAX_STANDARD_TX_WEIGHT = 400_000
#: Weight the miner fills a block to, leaving room for the coinbase.
MAX_TEMPLATE_WEIGHT = 3_990_000
#: Minimum relay fee rate, satoshis per 1,000 vbytes (bitcoind's default).
MIN_RELAY_FEE_PER_KVB = 1_000
# BIP 68 relative lock-time fields of nSequence.
SEQUENCE_DISABLE_FLAG = 1 << 31
SEQUENCE_TYPE_FLAG = 1 << 22
SEQUENCE_MASK = 0x0000FFFF
SEQUENCE_GRANULARITY = 9
NULL_TXID = bytes(32)


class Rejected(Exception):
    """A transaction the mempool refuses: bitcoind's error code and reject reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MempoolEntry:
    tx: Transaction
    raw: bytes
    txid: bytes
    wtxid: bytes
    fee: int
    vsize: int
    weight: int


class Mempool:
    """Unconfirmed transactions, in acceptance order (parents before children)."""

    def __init__(self, state: ChainState) -> None:
        self.state = state
        self.entries: dict[bytes, MempoolEntry] = {}
        self.spenders: dict[tuple[bytes, int], bytes] = {}
        self.vbytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    # -- checks -------------------------------------------------------------

    def _coin(self, txid: bytes, vout: int) -> Utxo | None:
        coin = self.state.utxos.get((txid, vout))
        if coin is not None:
            return coin
        parent = self.entries.get(txid)
        if parent is None or vout >= len(parent.tx.outputs):
            return None
        out = parent.tx.outputs[vout]
        # An unconfirmed coin counts as mined in the next block (BIP 68).
        return Utxo(out.value, out.script_pubkey, self.state.height + 1, False)

    def _sequence_locks_ok(self, tx: Transaction, coins: list[Utxo]) -> bool:
        """BIP 68 relative lock-times for version >= 2 transactions."""
        if tx.version < 2:
            return True
        next_height = self.state.height + 1
        for txin, coin in zip(tx.inputs, coins):
            seq = txin.sequence
            if seq & SEQUENCE_DISABLE_FLAG:
                continue
            value = seq & SEQUENCE_MASK
            if seq & SEQUENCE_TYPE_FLAG:
                base = self.state.median_time_past(max(coin.height - 1, 0))
                if base + (value << SEQUENCE_GRANULARITY) - 1 >= self.state.median_time_past():
                    return False
            elif coin.height + value - 1 >= next_height:
                return False
        return True

    def check(self, raw: bytes) -> MempoolEntry:
        """Validate ``raw`` against the chain and mempool without adding it.

        Raises:
            Rejected: with bitcoind's code and reason.
        """
        try:
            tx = Transaction.parse(raw)
        except (BitcoinError, ValueError):
            raise Rejected(RPC_DESERIALIZATION_ERROR,
                           "TX decode failed. Make sure the tx has at least one input.") from None
        txid = tx.txid
        if any(txin.outpoint.txid == NULL_TXID and txin.outpoint.index == 0xFFFFFFFF for txin in tx.inputs):
            raise Rejected(RPC_VERIFY_REJECTED, "coinbase")
        weight = tx.weight()
        if weight > MAX_STANDARD_TX_WEIGHT:
            raise Rejected(RPC_VERIFY_REJECTED, "tx-size")
        for out in tx.outputs:
            kind = output_type(out.script_pubkey)
            if kind in ("nonstandard", "witness_unknown"):
                raise Rejected(RPC_VERIFY_REJECTED, "scriptpubkey")
            if is_dust(out):
                raise Rejected(RPC_VERIFY_REJECTED, "dust")
        if txid in self.entries:
            raise Rejected(RPC_VERIFY_REJECTED, "txn-already-in-mempool")
        if txid in self.state.txindex:
            raise Rejected(RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction already in block chain")
        outpoints = [(txin.outpoint.txid, txin.outpoint.index) for txin in tx.inputs]
        if len(set(outpoints)) != len(outpoints):
            raise Rejected(RPC_VERIFY_REJECTED, "bad-txns-inputs-duplicate")
        # IsFinalTx for the next block, times against median-time-past (BIP 113).
        if not tx.is_final(self.state.height + 1, self.state.median_time_past()):
            raise Rejected(RPC_VERIFY_REJECTED, "non-final")
        if any(op in self.spenders for op in outpoints):
            raise Rejected(RPC_VERIFY_REJECTED, "txn-mempool-conflict")
        coins: list[Utxo] = []
        for txid_in, vout in outpoints:
            coin = self._coin(txid_in, vout)
            if coin is None:
                raise Rejected(RPC_VERIFY_ERROR, "bad-txns-inputs-missingorspent")
            coins.append(coin)
        spend_height = self.state.height + 1
        for coin in coins:
            if coin.coinbase and spend_height - coin.height < COINBASE_MATURITY:
                raise Rejected(
                    RPC_VERIFY_REJECTED,
                    f"bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth {spend_height - coin.height}",
                )
        value_in = sum(c.value for c in coins)
        value_out = sum(o.value for o in tx.outputs)
        if value_in < value_out:
            raise Rejected(RPC_VERIFY_REJECTED,
                           f"bad-txns-in-belowout, value in ({value_in}) < value out ({value_out})")
        if not self._sequence_locks_ok(tx, coins):
            raise Rejected(RPC_VERIFY_REJECTED, "non-BIP68-final")
        fee = value_in - value_out
        vsize = (weight + 3) // 4
        min_fee = min_relay_fee(vsize)  # MIN_RELAY_FEE_PER_KVB, rounded up like CFeeRate
        if fee < min_fee:
            raise Rejected(RPC_VERIFY_REJECTED, f"min relay fee not met, {fee} < {min_fee}")
        self._verify_scripts(raw, coins)
        if len(self.entries) >= MAX_MEMPOOL_TXS or self.vbytes + vsize > MAX_MEMPOOL_VBYTES:
            raise Rejected(RPC_VERIFY_REJECTED, "mempool full")
        return MempoolEntry(tx, raw, txid, tx.wtxid, fee, vsize, weight)

    @staticmethod
    def _verify_scripts(raw: bytes, coins: list[Utxo]) -> None:
        """Every input through libbitcoinkernel's interpreter with all consensus flags."""
        kernel_tx = pbk.Transaction(raw)
        spent = [pbk.TransactionOutput(pbk.ScriptPubkey(c.script_pubkey), c.value) for c in coins]
        precomputed = PrecomputedTransactionData(kernel_tx, spent)
        flags = pbk.ScriptVerificationFlags.ALL
        # Indices come from our own parse, so they are in range (an out-of-range
        # index aborts the process inside the C library).
        for index, coin in enumerate(coins):
            ok = pbk.ScriptPubkey(coin.script_pubkey).verify(coin.value, kernel_tx, precomputed, index, flags)
            if not ok:
                raise Rejected(RPC_VERIFY_REJECTED,
                               f"mandatory-script-verify-flag-failed (Script failed on input {index})")

    # -- changes ------------------------------------------------------------

    def add(self, raw: bytes) -> MempoolEntry:
        """Check and add; a transaction already in the mempool is returned as is."""
        try:
            entry = self.check(raw)
        except Rejected as exc:
            existing = self.entries.get(Transaction.parse(raw).txid) if exc.reason == "txn-already-in-mempool" else None
            if existing is not None:
                return existing
            raise
        self.entries[entry.txid] = entry
        for txin in entry.tx.inputs:
            self.spenders[(txin.outpoint.txid, txin.outpoint.index)] = entry.txid
        self.vbytes += entry.vsize
        return entry

    def template(self) -> list[MempoolEntry]:
        """Entries for the next block, parents first, within the block weight."""
        chosen: list[MempoolEntry] = []
        weight = 0
        taken: set[bytes] = set()
        for entry in self.entries.values():
            if weight + entry.weight > MAX_TEMPLATE_WEIGHT:
                break
            parents_in_pool = {t.outpoint.txid for t in entry.tx.inputs} & self.entries.keys()
            if not parents_in_pool <= taken:
                continue
            chosen.append(entry)
            taken.add(entry.txid)
            weight += entry.weight
        return chosen

    def refresh(self) -> None:
        """After a block: drop what was mined or became invalid, keep the rest."""
        old = list(self.entries.values())
        self.entries.clear()
        self.spenders.clear()
        self.vbytes = 0
        for entry in old:
            try:
                self.add(entry.raw)
            except Rejected:
                continue

    def clear(self) -> None:
        self.entries.clear()
        self.spenders.clear()
        self.vbytes = 0
