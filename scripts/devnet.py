"""A local mu network on loopback: ``mu chain`` plus N funded, running nodes.

Usage::

    scripts/devnet [--nodes N] [--dir DIR] [--json] [--demo [FILE]]

Starts ``mu chain`` (regtest, Bitcoin Core's validation through
libbitcoinkernel, a block every ``BLOCK_INTERVAL`` seconds so channel
fundings confirm) with its data dir in ``DIR/chain`` on a port the OS picks,
creates N node data dirs ``DIR/node-1`` .. ``DIR/node-N`` (identity key and
wallet seed), funds every node's wallet with one mature coinbase output (one
block mined to each wallet, then 100 blocks to mature them), and starts
``mu node`` in each (a free allowance of one chunk's price, every other transfer paid), all
joining the DHT through node-1.  It prints a summary (``--json``: one JSON
object on one line) and runs until SIGINT or SIGTERM, then stops every
process it started: SIGTERM, a bounded wait, and SIGKILL only for a process
that does not stop in time.

``--demo``: the main job.  Adds a sample file (or FILE) on node-1, fetches
it by its link on node-N, checks the bytes, prints every node's earnings
and stops everything.

Without ``--dir`` the network lives in a temporary directory removed at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from node.runtime.config import load_identity  # noqa: E402
from node.api.control import ControlClient  # noqa: E402
from node.bitcoin.rpc import RPCClient, RPCTransportError  # noqa: E402
from node.bitcoin.wallet import Wallet  # noqa: E402
from node.bitcoin.wallet import ANYONE_CAN_SPEND  # noqa: E402
from protocol.bitcoin import encode_address  # noqa: E402

DEFAULT_NODES = 5
BLOCK_INTERVAL = 1.0
DEMO_SIZE = 24 * 1024 * 1024 + 12345
# A free allowance of about one chunk's GET price: a fetcher pays for each chunk with its
# next request, so bytes that fail verification are never paid for (specs/network.md §4).
# Every node runs on 127.0.0.1: the DHT must be told it is a loopback devnet (specs/dht.md §5.3 Address limits).
NODE_ARGS = ("--free-allowance", "200", "--settle-poll", "1", "--loopback-devnet")
MAX_NODES = 64
START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
POLL_INTERVAL = 0.05
COINBASE_MATURITY = 100


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


async def _stop(process: trio.Process) -> None:
    """SIGTERM, wait up to STOP_DEADLINE, then SIGKILL."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_DEADLINE):
        await process.wait()
        return
    process.kill()
    await process.wait()


async def _start_chain(chain_dir: Path) -> tuple[trio.Process, str, Path]:
    """Run ``mu chain`` in ``chain_dir``; return it, its RPC URL and its cookie path once it answers."""
    chain_dir.mkdir(parents=True, exist_ok=True)
    service_dir = chain_dir / "chain"
    port_file, cookie = service_dir / "rpc.port", service_dir / ".cookie"
    port_file.unlink(missing_ok=True)
    cookie.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "node", "--data-dir", str(chain_dir), "chain", "--rpc-port", "0",
            "--block-interval", str(BLOCK_INTERVAL)]
    with open(chain_dir / "mu-chain.log", "ab") as log:
        process = await trio.lowlevel.open_process(argv, stdout=log, stderr=subprocess.STDOUT,
                                                   cwd=str(REPO_ROOT), env=_env())
    try:
        with trio.fail_after(START_DEADLINE):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"mu chain exited with {process.returncode}; see {chain_dir}/mu-chain.log")
                text = port_file.read_text().strip() if port_file.exists() else ""
                if text.isdigit() and cookie.exists():
                    url = f"http://127.0.0.1:{int(text)}/"
                    try:
                        async with RPCClient(url, cookie_path=cookie, timeout=5) as probe:
                            await probe.call("getblockcount")
                        return process, url, cookie
                    except RPCTransportError:
                        pass
                await trio.sleep(POLL_INTERVAL)  # polling a subprocess, bounded by fail_after
    except BaseException:
        with trio.CancelScope(shield=True):
            await _stop(process)
        raise


async def _fund(rpc: RPCClient, node_dirs: list[Path]) -> list[dict[str, Any]]:
    """Mine one block to each node's wallet, then mature them; return each node's summary."""
    wallets = [await Wallet.open(d, rpc) for d in node_dirs]
    for wallet in wallets:
        await rpc.call("generatetoaddress", 1, wallet.address())
    # The maturing blocks pay an anyone-can-spend script, so every node starts equal.
    burn = encode_address(ANYONE_CAN_SPEND, "regtest")
    await rpc.call("generatetoaddress", COINBASE_MATURITY, burn)
    nodes = []
    for d, wallet in zip(node_dirs, wallets):
        nodes.append({"data_dir": str(d), "node_id": load_identity(d).node_id.hex(),
                      "address": wallet.address(), "balance": await wallet.balance()})
    return nodes


async def _start_node(data_dir: Path, url: str, cookie: Path, bootstrap: int | None) -> tuple[trio.Process, dict]:
    """Run ``mu node`` in ``data_dir``; return it and its ``node.json`` once it is up."""
    info_file = data_dir / "node.json"
    info_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), "node", "--chain-rpc", url,
            "--chain-cookie", str(cookie), *NODE_ARGS]
    if bootstrap is not None:
        argv += ["--bootstrap", f"127.0.0.1:{bootstrap}"]
    with open(data_dir / "mu-node.log", "ab") as log:
        process = await trio.lowlevel.open_process(argv, stdout=log, stderr=subprocess.STDOUT,
                                                   cwd=str(REPO_ROOT), env=_env())
    try:
        with trio.fail_after(START_DEADLINE):
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"mu node exited with {process.returncode}; see {data_dir}/mu-node.log")
                try:
                    return process, json.loads(info_file.read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    pass
                await trio.sleep(POLL_INTERVAL)  # polling a subprocess, bounded by fail_after
    except BaseException:
        with trio.CancelScope(shield=True):
            await _stop(process)
        raise


async def _earnings(data_dir: Path) -> dict[str, Any]:
    """``mu earnings --json`` of one node."""
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), "earnings", "--json"]
    result = await trio.run_process(argv, capture_stdout=True, cwd=str(REPO_ROOT), env=_env())
    return json.loads(result.stdout)  # type: ignore[no-any-return]


async def demo(root: Path, nodes: list[dict[str, Any]], sample: Path | None) -> int:
    """The main job: add on node-1, fetch by link on node-N, print everyone's earnings."""
    if sample is None:
        sample = root / "sample.bin"
        sample.write_bytes(os.urandom(DEMO_SIZE))
    first, last = Path(nodes[0]["data_dir"]), Path(nodes[-1]["data_dir"])
    started = time.monotonic()
    added = await ControlClient.from_data_dir(first).run_stream(
        "add", {"path": str(sample.resolve())}, lambda e: None)
    print(f"node-1 added {sample.name} ({added['size']} bytes, {added['chunks']} chunks, "
          f"{added['replicas_confirmed']} replicas confirmed): {added['link']}")
    out = root / ("fetched-" + sample.name)
    got = await ControlClient.from_data_dir(last).run_stream(
        "get", {"link": added["link"], "output": str(out)}, lambda e: None)
    same = out.read_bytes() == sample.read_bytes()
    print(f"node-{len(nodes)} fetched it by its link in {got['seconds']} s, {got['sats_spent']} sats spent: "
          f"{'byte-identical' if same else 'DIFFERENT BYTES'}")
    print("earnings (sats):  earned  spent")
    for i, node in enumerate(nodes, 1):
        report = await _earnings(Path(node["data_dir"]))
        print(f"  node-{i} {node['node_id'][:12]}  {report['earned']:>6} {report['spent']:>6}")
    print(f"main job done in {time.monotonic() - started:.1f} s")
    return 0 if same else 3


async def run_devnet(root: Path, n_nodes: int, as_json: bool, run_demo: bool, sample: Path | None) -> int:
    """Start the devnet in ``root``, report it, wait for a signal (or run the demo), stop it all."""
    code = 0
    procs: list[trio.Process] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        process, url, cookie = await _start_chain(root / "chain")
        procs.append(process)
        try:
            node_dirs = [root / f"node-{i}" for i in range(1, n_nodes + 1)]
            for d in node_dirs:
                d.mkdir(parents=True, exist_ok=True)
                load_identity(d, create=True)
            async with RPCClient(url, cookie_path=cookie) as rpc:
                nodes = await _fund(rpc, node_dirs)
                height = await rpc.call("getblockcount")
            first_proc, first_info = await _start_node(node_dirs[0], url, cookie, None)
            procs.append(first_proc)
            infos = [first_info]

            async def start_other(d: Path, slot: list) -> None:
                slot.append(await _start_node(d, url, cookie, int(first_info["dht_port"])))

            slots: list[list] = [[] for _ in node_dirs[1:]]
            async with trio.open_nursery() as nursery:
                for d, slot in zip(node_dirs[1:], slots):
                    nursery.start_soon(start_other, d, slot)
            for slot in slots:
                procs.append(slot[0][0])
                infos.append(slot[0][1])
            for node, info in zip(nodes, infos):
                node.update(pid=info["pid"], port=info["port"], dht_port=info["dht_port"],
                            control_port=info["control_port"])
            summary = {"dir": str(root), "chain": {"url": url, "cookie": str(cookie), "pid": process.pid,
                                                   "height": height}, "nodes": nodes}
            if as_json:
                print(json.dumps(summary), flush=True)
            else:
                print(f"devnet in {root}: mu chain at {url} (height {height})")
                for i, node in enumerate(nodes, 1):
                    print(f"  node-{i} {node['node_id'][:16]}  tcp {node['port']}  dht {node['dht_port']}  "
                          f"{node['balance']} sats  (mu --data-dir {node['data_dir']} status)")
            if run_demo:
                code = await demo(root, nodes, sample)
            else:
                if not as_json:
                    print("running; Ctrl-C stops everything", flush=True)
                async for _ in signals:
                    break
        finally:
            with trio.CancelScope(shield=True):
                for proc in reversed(procs):  # nodes first, the chain last
                    await _stop(proc)
    if not as_json:
        print("devnet stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/devnet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES, help=f"node count (default {DEFAULT_NODES})")
    parser.add_argument("--dir", default=None, help="where the network lives (default: a temporary dir)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.add_argument("--demo", nargs="?", const="", default=None, metavar="FILE",
                        help="run the main job (add FILE or a sample on node-1, fetch it on node-N) and stop")
    args = parser.parse_args(argv)
    run_demo = args.demo is not None
    sample = Path(args.demo) if args.demo else None
    if not 1 <= args.nodes <= MAX_NODES:
        parser.error(f"--nodes must be 1..{MAX_NODES}")
    if args.dir:
        return trio.run(run_devnet, Path(args.dir).resolve(), args.nodes, args.json, run_demo, sample)
    with tempfile.TemporaryDirectory(prefix="mu-devnet-") as tmp:
        return trio.run(run_devnet, Path(tmp), args.nodes, args.json, run_demo, sample)


if __name__ == "__main__":
    sys.exit(main())
