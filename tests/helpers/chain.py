"""``open_mu_chain``: run ``mu chain`` as a real subprocess for a test.

    async with open_mu_chain(tmp_path) as chain:
        await chain.rpc.call("getblockcount")

The service binds port 0 (the OS picks a free port) and writes it to
``<data_dir>/chain/rpc.port``; we poll for that file and for RPC answers
with a bounded deadline, never a fixed sleep.  We delete nothing: an
``rpc.port`` a killed chain left names a dead port (the probe fails and we
poll on) until the new chain, holding ``chain.lock``, replaces it.  On exit the process gets
SIGTERM and is waited for (SIGKILL only if it does not stop in time).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from node.bitcoin.rpc import RPCClient, RPCTransportError
from node.bitcoin.wallet import Wallet

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 60.0
STOP_DEADLINE = 30.0
POLL_INTERVAL = 0.05


@dataclass
class MuChain:
    rpc: RPCClient
    url: str
    cookie_path: Path
    data_dir: Path
    process: trio.Process


async def _wait_ready(process: trio.Process, port_file: Path, cookie: Path) -> str:
    with trio.fail_after(START_DEADLINE):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"mu chain exited with {process.returncode} before answering")
            if port_file.exists() and cookie.exists():
                text = port_file.read_text().strip()
                if text.isdigit():
                    url = f"http://127.0.0.1:{int(text)}/"
                    try:
                        async with RPCClient(url, cookie_path=cookie, timeout=5) as probe:
                            await probe.call("getblockcount")
                        return url
                    except RPCTransportError:
                        pass
            await trio.sleep(POLL_INTERVAL)  # polling a subprocess, bounded by fail_after


async def _stop(process: trio.Process, sig: int = signal.SIGTERM) -> None:
    if process.returncode is not None:
        return
    process.send_signal(sig)
    with trio.move_on_after(STOP_DEADLINE):
        await process.wait()
        return
    process.kill()
    await process.wait()


@asynccontextmanager
async def open_mu_chain(data_dir: Path, *, block_interval: float | None = None, mine: bool = False,
                        rpc_port: int = 0, extra_args: list[str] | None = None) -> AsyncIterator[MuChain]:
    """Start ``mu chain`` in ``data_dir``; stop it cleanly (SIGTERM, wait) on exit.

    By default the chain runs with ``--no-mine``: tests mine by hand and
    count blocks exactly.  ``block_interval`` or ``mine`` let it mine on its
    own (a block every interval, and one at once for a transaction entering
    an empty mempool; specs/chain.md §3.4 When blocks are mined).

    Args:
        data_dir: the mu data dir; the chain lives in ``data_dir/chain``.
        block_interval: mine on its own, a block every this many seconds.
        mine: mine on its own at ``mu chain``'s default pace.
        rpc_port: 0 (default) lets the OS pick a free port.
        extra_args: more ``mu chain`` options.
    """
    chain_dir = data_dir / "chain"
    port_file = chain_dir / "rpc.port"
    cookie = chain_dir / ".cookie"
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), "chain", "--rpc-port", str(rpc_port)]
    if block_interval is not None:
        argv += ["--block-interval", str(block_interval)]
    elif not mine:
        argv += ["--no-mine"]
    argv += extra_args or []
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log_path = data_dir / "mu-chain.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = await trio.lowlevel.open_process(
            argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env)
    try:
        url = await _wait_ready(process, port_file, cookie)
        async with RPCClient(url, cookie_path=cookie) as rpc:
            yield MuChain(rpc=rpc, url=url, cookie_path=cookie, data_dir=data_dir, process=process)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


async def funded_wallet(chain: MuChain, wallet_dir: Path, blocks: int = 1) -> Wallet:
    """A wallet in ``wallet_dir`` holding ``blocks`` matured regtest coinbases (50 BTC each early on)."""
    wallet = await Wallet.open(wallet_dir, chain.rpc)
    await wallet.faucet(blocks)
    return wallet
