"""The chain as ``mu chain`` sees it: kernel + block log + in-memory indexes.

libbitcoinkernel 0.1.0a5 validates and stores blocks but offers no UTXO or
transaction lookups, so this module keeps them itself, derived only from
blocks the kernel accepted (``specs/chain.md`` §5 Files and recovery):

* ``hashes``/``headers`` by height, ``heights`` by hash;
* ``txindex``: txid -> (height, position in block), like bitcoind -txindex;
* ``utxos``: outpoint -> :class:`Utxo`, the unspent outputs.

There are no reorgs: this service is its chain's only miner and has no
``submitblock``.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import pbk

from node.chain.blocklog import LOG_FILE, BlockLog
from node.chain.kernel import Kernel, SubmitResult
from protocol.bitcoin.block import BlockHeader, build_block

log = logging.getLogger(__name__)

KERNEL_DIR = "kernel"
#: Blocks a coinbase output must wait before it can be spent (consensus).
COINBASE_MATURITY = 100
#: Number of previous timestamps in median-time-past (consensus).
MEDIAN_TIME_SPAN = 11


@dataclass(frozen=True, slots=True)
class Utxo:
    """An unspent output: value in satoshis, script, height mined, coinbase flag."""

    value: int
    script_pubkey: bytes
    height: int
    coinbase: bool


@dataclass(frozen=True, slots=True)
class TxView:
    """What the indexes and the mempool need to know about one transaction."""

    raw: bytes
    txid: bytes
    inputs: tuple[tuple[bytes, int, int], ...]  # (prev txid, vout, nSequence)
    outputs: tuple[tuple[int, bytes], ...]  # (value, scriptPubKey)
    locktime: int


def view_of(tx: pbk.Transaction) -> TxView:
    """Copy a kernel-parsed transaction into plain Python values."""
    inputs = tuple(
        (bytes(i.out_point.txid), i.out_point.index, i.sequence) for i in tx.inputs
    )
    outputs = tuple((o.amount, bytes(o.script_pubkey)) for o in tx.outputs)
    return TxView(bytes(tx), bytes(tx.txid), inputs, outputs, tx.locktime)


class ChainState:
    """The active chain with its indexes; all methods run on one thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kernel = Kernel(data_dir / KERNEL_DIR)
        self.block_log = BlockLog(data_dir / LOG_FILE)
        self.hashes: list[bytes] = []
        self.headers: list[BlockHeader] = []
        self.heights: dict[bytes, int] = {}
        self.txindex: dict[bytes, tuple[int, int]] = {}
        self.utxos: dict[tuple[bytes, int], Utxo] = {}
        self._genesis = self.kernel.block_bytes(0)
        self._extra_nonce = 0
        self._replay()
        self._index_block(self._genesis, 0)
        for height, raw in enumerate(self.block_log, start=1):
            self._index_block(raw, height)

    # -- start-up ---------------------------------------------------------

    def _replay(self) -> None:
        """Bring kernel and log into agreement (``specs/chain.md`` §5.2 Start-up)."""
        kernel_height, _ = self.kernel.tip()
        start = 0
        if 0 < kernel_height <= len(self.block_log):
            # Blocks the kernel kept need no replay if its tip matches the log.
            at_tip = BlockHeader.parse(self.block_log.read(kernel_height - 1)[:80]).hash()
            if at_tip == self.kernel.tip()[1]:
                start = kernel_height
        replayed = 0
        for index in range(start, len(self.block_log)):
            result = self.kernel.submit(self.block_log.read(index))
            if not result.accepted:
                log.warning("block log record %d not accepted on replay: %s", index, result.reason)
                break
            replayed += 1
        kernel_height, _ = self.kernel.tip()
        chain = self.kernel.chainman.get_active_chain()
        agree = 0
        for index in range(min(len(self.block_log), kernel_height)):
            logged = BlockHeader.parse(self.block_log.read(index)[:80]).hash()
            if logged != bytes(chain.block_tree_entries[index + 1].block_hash):
                break
            agree = index + 1
        if agree < len(self.block_log):
            log.warning("dropping %d block log records the kernel does not have", len(self.block_log) - agree)
            self.block_log.truncate(agree)
        for height in range(agree + 1, kernel_height + 1):
            self.block_log.append(self.kernel.block_bytes(height))
        if replayed:
            log.info("replayed %d blocks from the block log", replayed)

    def _index_block(self, raw: bytes, height: int) -> None:
        header = BlockHeader.parse(raw[:80])
        block_hash = header.hash()
        self.hashes.append(block_hash)
        self.headers.append(header)
        self.heights[block_hash] = height
        for position, tx in enumerate(pbk.Block(raw).transactions):
            view = view_of(tx)
            self.txindex[view.txid] = (height, position)
            if height == 0:
                continue  # the genesis output is not spendable (Bitcoin Core)
            if position > 0:
                for prev_txid, vout, _ in view.inputs:
                    self.utxos.pop((prev_txid, vout), None)
            for vout, (value, script) in enumerate(view.outputs):
                if script[:1] == b"\x6a":
                    continue  # OP_RETURN outputs are provably unspendable
                self.utxos[(view.txid, vout)] = Utxo(value, script, height, position == 0)

    # -- queries ------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self.hashes) - 1

    @property
    def tip_hash(self) -> bytes:
        return self.hashes[-1]

    def median_time_past(self, height: int | None = None) -> int:
        """BIP 113 median of the 11 timestamps ending at ``height`` (default tip)."""
        end = self.height if height is None else height
        times = sorted(h.time for h in self.headers[max(0, end - MEDIAN_TIME_SPAN + 1):end + 1])
        return times[len(times) // 2]

    def block_bytes(self, height: int) -> bytes:
        if height == 0:
            return self._genesis
        return self.block_log.read(height - 1)

    def transaction(self, txid: bytes) -> tuple[TxView, int, int] | None:
        """A confirmed transaction with its height and position, if indexed."""
        where = self.txindex.get(txid)
        if where is None:
            return None
        height, position = where
        tx = pbk.Block(self.block_bytes(height)).transactions[position]
        return view_of(tx), height, position

    # -- growth ---------------------------------------------------------------

    def submit_block(self, raw: bytes) -> SubmitResult:
        """Have the kernel validate ``raw``; if it became the tip, log and index it."""
        result = self.kernel.submit(raw)
        if result.accepted:
            self.block_log.append(raw)
            self._index_block(raw, self.height + 1)
        return result

    def build_next_block(
        self, script_pubkey: bytes, transactions: list[tuple[bytes, bytes, bytes]], fees: int, now: int
    ) -> bytes:
        """Assemble and solve the next block (time = max(MTP + 1, now))."""
        self._extra_nonce += 1
        return build_block(
            prev_hash=self.tip_hash,
            height=self.height + 1,
            time=max(self.median_time_past() + 1, now),
            script_pubkey=script_pubkey,
            transactions=transactions,
            fees=fees,
            extra_nonce=struct.pack("<I", self._extra_nonce),
        )

    def close(self) -> None:
        self.kernel.close()
        self.block_log.close()
