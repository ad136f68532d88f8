"""`mu chain` mines on its own (specs/chain.md §3.4 When blocks are mined), and `--no-mine` stops it.

A funding sent to a chain nobody mines by hand confirms within a moment,
because a transaction entering an empty mempool wakes the miner at once;
with ``--no-mine`` the height stays where it is.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.helpers.chain import MuChain, funded_wallet, open_mu_chain

#: Far more than a confirmation may take: a timed block within this would hide a missing wake-up.
LONG_INTERVAL = 3_600.0
CONFIRM_DEADLINE = 10.0
POLL_INTERVAL = 0.05
#: How long --no-mine is watched for a block it must not mine (an observation window, not a wait for an event).
QUIET_WINDOW = 1.0


async def _send_and_wait_for_one_confirmation(chain: MuChain, tmp_path: Path) -> None:
    wallet = await funded_wallet(chain, tmp_path / "wallet")  # mines its coins by hand: 101 blocks
    height = await chain.rpc.call("getblockcount")
    txid = await wallet.send(wallet.address(1), 100_000)
    with trio.fail_after(CONFIRM_DEADLINE):
        while True:
            tx = await chain.rpc.call("getrawtransaction", txid, True)
            if tx.get("confirmations", 0) >= 1:
                break
            await trio.sleep(POLL_INTERVAL)  # polling the chain process, bounded by fail_after
    assert await chain.rpc.call("getblockcount") > height


async def test_default_chain_confirms_a_funding_without_anyone_mining(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "node", mine=True) as chain:
        await _send_and_wait_for_one_confirmation(chain, tmp_path)


async def test_a_transaction_entering_an_empty_mempool_is_mined_at_once(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "node", block_interval=LONG_INTERVAL) as chain:
        await _send_and_wait_for_one_confirmation(chain, tmp_path)


async def test_no_mine_keeps_the_height_still(tmp_path: Path) -> None:
    # The helper passes --no-mine; a short interval it must override would mine at once if it did not.
    async with open_mu_chain(tmp_path / "node", extra_args=["--block-interval", "0.05"]) as chain:
        wallet = await funded_wallet(chain, tmp_path / "wallet")
        height = await chain.rpc.call("getblockcount")
        txid = await wallet.send(wallet.address(1), 100_000)
        # The window ends between calls, never inside one: a call cancelled half-way
        # leaves its reply unread on the kept-alive connection, where the next call
        # would read it as its own.  A loaded machine only makes the polls fewer; the
        # last one, after the window, still sees any block mined within it.
        window_ends = trio.current_time() + QUIET_WINDOW
        while trio.current_time() < window_ends:
            assert await chain.rpc.call("getblockcount") == height
            await trio.sleep(POLL_INTERVAL)  # watching for a block that must not come
        assert await chain.rpc.call("getblockcount") == height
        assert await chain.rpc.call("getrawmempool") == [txid]
