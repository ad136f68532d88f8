"""Benchmark for mu chain (see scripts/bench-chain)."""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pbk
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.chain.state import ChainState  # noqa: E402
from node.bitcoin.rpc import btc_to_sats  # noqa: E402
from node.bitcoin.wallet import Coin, Wallet  # noqa: E402
from protocol.bitcoin import OutPoint, Transaction, TxIn, TxOut  # noqa: E402
from tests.helpers.chain import open_mu_chain  # noqa: E402

SEED = b"\x42" * 32


def spends(wallet: Wallet, state: ChainState, count: int) -> list[tuple[Transaction, int]]:
    """One signed spend of each of ``count`` mature coinbases of wallet key 0."""
    script = wallet.script_pubkey()
    coins = sorted(((op, c) for op, c in state.utxos.items() if c.script_pubkey == script),
                   key=lambda item: item[1].height)[:count]
    out = []
    for (txid, vout), coin in coins:
        c = Coin(OutPoint(txid, vout), coin.value, 0, coin.height, True)
        tx = Transaction(2, (TxIn(c.outpoint),), (TxOut(coin.value - 1_000, wallet.script_pubkey(1)),), 0)
        out.append((wallet._sign(tx, [c]), coin.value))
    return out


def bench_blocks(count: int) -> tuple[float, float]:
    """(blocks validated/s with one spend each, raw kernel script verifies/s)."""
    wallet = Wallet(SEED, rpc=None)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        state = ChainState(Path(tmp))
        now = int(time.time())
        for _ in range(count):
            state.submit_block(state.build_next_block(wallet.script_pubkey(), [], 0, now))
        for _ in range(100):
            state.submit_block(state.build_next_block(wallet.script_pubkey(2), [], 0, now))
        txs = spends(wallet, state, count)
        # Reference: the kernel's script interpreter alone on the same spends.
        script = pbk.ScriptPubkey(wallet.script_pubkey())
        kernel_txs = [(pbk.Transaction(tx.serialize()), value) for tx, value in txs]
        start = time.perf_counter()
        for ktx, value in kernel_txs:
            pre = pbk.script.PrecomputedTransactionData(ktx, [pbk.TransactionOutput(script, value)])
            assert script.verify(value, ktx, pre, 0, pbk.ScriptVerificationFlags.ALL)
        verify_rate = len(kernel_txs) / (time.perf_counter() - start)
        start = time.perf_counter()
        for tx, _ in txs:
            raw = state.build_next_block(wallet.script_pubkey(2), [(tx.serialize(), tx.txid, tx.wtxid)], 1_000, now)
            assert state.submit_block(raw).accepted
        block_rate = len(txs) / (time.perf_counter() - start)
        state.close()
    return block_rate, verify_rate


async def bench_rpc(count: int) -> tuple[float, float]:
    """(sendrawtransaction calls/s, getblockcount round trips/s) against a real mu chain."""
    with tempfile.TemporaryDirectory() as tmp:
        async with open_mu_chain(Path(tmp)) as chain:
            wallet = Wallet(SEED, chain.rpc)
            await chain.rpc.call("generatetoaddress", count, wallet.address())
            await chain.rpc.call("generatetoaddress", 100, wallet.address(2))
            scan = await chain.rpc.call("scantxoutset", "start", [f"addr({wallet.address()})"])
            txs = []
            for u in scan["unspents"]:
                c = Coin(OutPoint.from_hex(u["txid"], u["vout"]), btc_to_sats(u["amount"]), 0, u["height"], True)
                tx = Transaction(2, (TxIn(c.outpoint),), (TxOut(c.value - 1_000, wallet.script_pubkey(1)),), 0)
                txs.append(wallet._sign(tx, [c]).hex())
            start = time.perf_counter()
            for _ in range(count):
                await chain.rpc.call("getblockcount")
            ping_rate = count / (time.perf_counter() - start)
            start = time.perf_counter()
            for raw in txs:
                await chain.rpc.call("sendrawtransaction", raw)
            send_rate = len(txs) / (time.perf_counter() - start)
            assert len(await chain.rpc.call("getrawmempool")) == len(txs)
    return send_rate, ping_rate


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench-chain")
    parser.add_argument("--quick", action="store_true", help="small run (proves the benchmark works)")
    parser.add_argument("--blocks", type=int, default=None, help="spend blocks per run")
    parser.add_argument("--txs", type=int, default=None, help="sendrawtransaction calls per run")
    parser.add_argument("--runs", type=int, default=None, help="runs; medians are reported")
    args = parser.parse_args()
    blocks = args.blocks or (20 if args.quick else 300)
    txs = args.txs or (20 if args.quick else 300)
    runs = args.runs or (1 if args.quick else 3)
    block_rates, verify_rates, send_rates, ping_rates = [], [], [], []
    for _ in range(runs):
        b, v = bench_blocks(blocks)
        s, p = trio.run(bench_rpc, txs)
        block_rates.append(b)
        verify_rates.append(v)
        send_rates.append(s)
        ping_rates.append(p)
    b, v = statistics.median(block_rates), statistics.median(verify_rates)
    s, p = statistics.median(send_rates), statistics.median(ping_rates)
    print(f"runs: {runs}, spend blocks per run: {blocks}, transactions per run: {txs}")
    print(f"raw kernel script verifies/s      : {v:,.0f}")
    print(f"blocks validated/s (1 spend each) : {b:,.0f}")
    print(f"ratio blocks / raw verifies       : {b / v:.3f}")
    print(f"getblockcount round trips/s       : {p:,.0f}")
    print(f"sendrawtransaction calls/s        : {s:,.0f}")
    print(f"ratio sendrawtransaction / RPC    : {s / p:.3f}")
    print(f"peak RSS (this process)           : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
