"""scripts/bench-chain --quick works; `mu wallet` and `mu chain` work from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import trio

from tests.helpers.chain import open_mu_chain

ROOT = Path(__file__).resolve().parents[3]


def test_bench_chain_quick_prints_both_rates_and_references() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "bench-chain"), "--quick", "--blocks", "5", "--txs", "5"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rates = dict(re.findall(r"^([a-z][^:]*?)\s*:\s*([\d,]+)$", out, re.M))
    for name in ("raw kernel script verifies/s", "blocks validated/s (1 spend each)",
                 "getblockcount round trips/s", "sendrawtransaction calls/s"):
        assert int(rates[name].replace(",", "")) > 0, name
    assert "ratio blocks / raw verifies" in out and "ratio sendrawtransaction / RPC" in out


async def mu(data_dir: Path, *args: str) -> tuple[int, str, str]:
    """Run ``mu --data-dir D ARGS``; returns (exit code, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = await trio.run_process([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args],
                                  capture_stdout=True, capture_stderr=True, check=False, env=env, cwd=ROOT)
    return done.returncode, done.stdout.decode().strip(), done.stderr.decode()


async def test_mu_wallet_cli(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    async with open_mu_chain(data_dir) as chain:
        code, address, _ = await mu(data_dir, "wallet", "address")
        assert code == 0 and address.startswith("bcrt1q")
        assert (data_dir / "wallet.seed").stat().st_mode & 0o777 == 0o600
        assert await mu(data_dir, "wallet", "faucet", "1") == (0, str(50 * 10**8), "")
        other = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
        code, txid, err = await mu(data_dir, "wallet", "send", other, "100000")
        assert code == 0, err
        assert await chain.rpc.call("getrawmempool") == [txid]
        code, _, err = await mu(data_dir, "wallet", "send", other, str(10**12))
        assert code == 1 and "insufficient funds" in err
        code, _, err = await mu(data_dir, "wallet", "send", "notanaddress", "1000")
        assert code == 1 and "bad address" in err
    code, _, err = await mu(tmp_path / "elsewhere", "wallet", "balance")
    assert code == 1 and "no running `mu chain`" in err
