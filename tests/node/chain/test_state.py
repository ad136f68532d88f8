"""ChainState in-process: libbitcoinkernel judges our blocks; the block log replays."""

from __future__ import annotations

import time
from pathlib import Path

from node.chain.blocklog import LOG_FILE
from node.chain.state import ChainState
from protocol.bitcoin.block import (
    BLOCK_VERSION,
    REGTEST_BITS,
    BlockHeader,
    block_subsidy,
    build_coinbase,
    compact_size,
    merkle_root,
    solve_header,
)

SCRIPT = bytes.fromhex("0014") + bytes(range(20))


def mine(state: ChainState, count: int) -> None:
    for _ in range(count):
        result = state.submit_block(state.build_next_block(SCRIPT, [], 0, int(time.time())))
        assert result.accepted, result.reason


def block_with_commitment(state: ChainState, commitment: bytes, extra_nonce: bytes = b"\x99") -> bytes:
    """The next block, correctly hashed and merkle-rooted, but committing to ``commitment``."""
    height = state.height + 1
    coinbase = build_coinbase(height=height, script_pubkey=SCRIPT, value=block_subsidy(height),
                              extra_nonce=extra_nonce, commitment=commitment)
    header = solve_header(BlockHeader(
        version=BLOCK_VERSION, prev_hash=state.tip_hash, merkle_root=merkle_root([coinbase.txid]),
        time=state.median_time_past() + 1, bits=REGTEST_BITS, nonce=0))
    return header.serialize() + compact_size(1) + coinbase.raw


def test_mined_blocks_connect_and_index_coinbases(tmp_path: Path) -> None:
    state = ChainState(tmp_path)
    try:
        mine(state, 5)
        assert state.height == 5 == state.kernel.tip()[0]
        assert state.kernel.tip()[1] == state.tip_hash
        mine_coins = [c for c in state.utxos.values() if c.script_pubkey == SCRIPT]
        assert len(mine_coins) == 5 and all(c.coinbase and c.value == 50 * 10**8 for c in mine_coins)
        assert state.median_time_past() >= state.headers[1].time
    finally:
        state.close()


def test_broken_witness_commitment_is_refused_and_tip_stays(tmp_path: Path) -> None:
    state = ChainState(tmp_path)
    try:
        mine(state, 2)
        tip = state.tip_hash
        # Control: the right commitment (empty block) is accepted by the same path.
        from protocol.bitcoin.block import witness_commitment

        bad = state.submit_block(block_with_commitment(state, b"\x42" * 32))
        assert not bad.accepted
        assert "witness" in bad.reason, bad.reason
        assert state.tip_hash == tip and state.kernel.tip()[1] == tip and state.height == 2
        good = state.submit_block(block_with_commitment(state, witness_commitment([]), b"\x98"))
        assert good.accepted and state.height == 3
    finally:
        state.close()


def test_reopen_replays_and_keeps_utxos(tmp_path: Path) -> None:
    state = ChainState(tmp_path)
    mine(state, 12)
    tip, utxos = state.tip_hash, dict(state.utxos)
    state.close()
    again = ChainState(tmp_path)
    try:
        assert again.tip_hash == tip and again.height == 12
        assert again.utxos == utxos
    finally:
        again.close()


def test_torn_block_log_tail_is_cut_off(tmp_path: Path) -> None:
    state = ChainState(tmp_path)
    mine(state, 3)
    tip = state.tip_hash
    state.close()
    with open(tmp_path / LOG_FILE, "ab") as log:
        log.write(b"\x10\x00\x00\x00garbage")  # a record header and half a block
    again = ChainState(tmp_path)
    try:
        assert again.tip_hash == tip and len(again.block_log) == 3
        mine(again, 1)
        assert again.height == 4
    finally:
        again.close()
    third = ChainState(tmp_path)
    try:
        assert third.height == 4
    finally:
        third.close()
