"""ChainState in-process: libbitcoinkernel judges our blocks; the block log replays."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
    witness_commitment,
)

SCRIPT = bytes.fromhex("0014") + bytes(range(20))


def mine(state: ChainState, count: int) -> None:
    for _ in range(count):
        result = state.submit_block(state.build_next_block(SCRIPT, [], 0, int(time.time())))
        assert result.accepted, result.reason


def block_with_commitment(state: ChainState, commitment: bytes, extra_nonce: bytes = b"\x99", *,
                          extra_value: int = 0, height_offset: int = 0, time_offset: int = 1) -> bytes:
    """The next block, correctly hashed and merkle-rooted, with the given flaws."""
    height = state.height + 1
    coinbase = build_coinbase(height=height + height_offset, script_pubkey=SCRIPT,
                              value=block_subsidy(height) + extra_value,
                              extra_nonce=extra_nonce, commitment=commitment)
    header = solve_header(BlockHeader(
        version=BLOCK_VERSION, prev_hash=state.tip_hash, merkle_root=merkle_root([coinbase.txid]),
        time=state.median_time_past() + time_offset, bits=REGTEST_BITS, nonce=0))
    return header.serialize() + compact_size(1) + coinbase.raw


@pytest.mark.parametrize(
    ("flaw", "reason"),
    [({"extra_value": 1}, "bad-cb-amount"), ({"height_offset": 1}, "bad-cb-height"),
     ({"time_offset": 0}, "time-too-old")],
)
def test_consensus_violations_are_refused_with_the_kernel_reason(
    tmp_path: Path, flaw: dict[str, int], reason: str
) -> None:
    state = ChainState(tmp_path)
    try:
        mine(state, 3)
        tip = state.tip_hash
        result = state.submit_block(block_with_commitment(state, witness_commitment([]), **flaw))
        assert (result.accepted, result.reason) == (False, reason)
        assert state.tip_hash == tip == state.kernel.tip()[1] and len(state.block_log) == 3
    finally:
        state.close()


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
        bad = state.submit_block(block_with_commitment(state, b"\x42" * 32))
        assert not bad.accepted
        assert bad.reason == "bad-witness-merkle-match"
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


def _spend(wallet, state: ChainState, outpoint: tuple[bytes, int], value_out: int, *, lie: int = 0):
    """A signed spend of a wallet key-0 coin (``lie`` signs for a wrong amount)."""
    from node.bitcoin.wallet import Coin
    from protocol.bitcoin import OutPoint, Transaction, TxIn, TxOut

    coin = state.utxos[outpoint]
    signed_for = Coin(OutPoint(*outpoint), coin.value + lie, 0, coin.height, True)
    tx = Transaction(2, (TxIn(signed_for.outpoint),), (TxOut(value_out, wallet.script_pubkey(1)),), 0)
    return wallet._sign(tx, [signed_for])


@pytest.mark.parametrize(
    ("case", "reason"),
    [("double", "bad-txns-inputs-missingorspent"), ("immature", "bad-txns-premature-spend-of-coinbase"),
     ("badsig", "block-script-verify-flag-failed")],
)
def test_blocks_with_bad_transactions_are_refused(tmp_path: Path, case: str, reason: str) -> None:
    from node.bitcoin.wallet import Wallet

    wallet = Wallet(b"\x01" * 32, rpc=None)  # type: ignore[arg-type]
    state = ChainState(tmp_path)
    try:
        state.submit_block(state.build_next_block(wallet.script_pubkey(), [], 0, int(time.time())))
        mine(state, 0 if case == "immature" else 100)
        outpoint = next(op for op, c in state.utxos.items() if c.script_pubkey == wallet.script_pubkey())
        first = _spend(wallet, state, outpoint, 10**9, lie=1 if case == "badsig" else 0)
        txs = [first]
        if case == "double":
            txs.append(_spend(wallet, state, outpoint, 2 * 10**9))
        tip, height = state.tip_hash, state.height
        entries = [(t.serialize(), t.txid, t.wtxid) for t in txs]
        raw = state.build_next_block(SCRIPT, entries, 0, int(time.time()))
        result = state.submit_block(raw)
        assert not result.accepted and result.reason.startswith(reason), (result.reason, state.kernel.recent_log()[-3:])
        assert state.tip_hash == tip and state.height == height and state.kernel.tip()[1] == tip
    finally:
        state.close()
