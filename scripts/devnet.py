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
joining the DHT through node-1.  It says what it is doing as it sets up
(on stderr with ``--json``), prints a summary (``--json``: one JSON object
on one line) and runs until SIGINT or SIGTERM, then stops every process it
started: SIGTERM, a bounded wait, and SIGKILL only for a process that does
not stop in time.

``--demo``: the main job (``scripts/demo``).  node-1 adds a sample file (or
FILE), which is pushed to the nodes closest to each chunk; node-N, started
only then, so that it holds none of the file's chunks, fetches it by its
link and pays the hosts for every chunk past their free allowance.  The
demo prints the fetcher's spend and each host's earnings, checks from every
node's ledger that what was paid equals what was earned (to the sat, with
anything still in flight), has the host paid most by the fetcher close that
channel on chain and prints the settlement's txid and confirmation height.

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
from collections.abc import Awaitable, Callable
from typing import Any

import trio

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from node.runtime.config import load_identity  # noqa: E402
from node.runtime.settings import DEFAULTS  # noqa: E402
from node.api.control import ControlClient  # noqa: E402
from node.bitcoin.rpc import RPCClient, RPCTransportError  # noqa: E402
from node.bitcoin.wallet import Wallet  # noqa: E402
from node.bitcoin.wallet import ANYONE_CAN_SPEND  # noqa: E402
from node.ledger import LEDGER_FILE, Ledger  # noqa: E402
from protocol.bitcoin import encode_address  # noqa: E402
from protocol.chunks import DEFAULT_CHUNK_SIZE, TAG_SIZE  # noqa: E402
from protocol.payments import chunk_price  # noqa: E402

DEFAULT_NODES = 5
BLOCK_INTERVAL = 1.0
DEMO_SIZE = 24 * 1024 * 1024 + 12345
# A free allowance of one full chunk's GET price (101 sats at the default 100 sats/MiB): a fetcher
# pays for each chunk with its next request, so bytes that fail verification are never paid for
# (specs/network.md §4 The download algorithm); every chunk after the first from a host is paid.
FREE_ALLOWANCE = chunk_price(DEFAULT_CHUNK_SIZE + TAG_SIZE, DEFAULTS.price_get)  # a full chunk's ciphertext
# Every node runs on 127.0.0.1: the DHT must be told it is a loopback devnet (specs/dht.md §5.3 Address limits).
NODE_ARGS = ("--free-allowance", str(FREE_ALLOWANCE), "--settle-poll", "1", "--loopback-devnet")
SETTLE_DEADLINE = 60.0
SETTLE_POLL = 0.25
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


async def _mu_json(data_dir: Path, *args: str) -> Any:
    """``mu --data-dir DATA_DIR ARGS --json``, parsed; a failure stops the demo with mu's message."""
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), *args, "--json"]
    result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False,
                                    cwd=str(REPO_ROOT), env=_env())
    if result.returncode != 0:
        raise RuntimeError(f"mu {' '.join(args)} exited with {result.returncode}: {result.stderr.decode().strip()}")
    return json.loads(result.stdout)


def _sats(amount: int) -> str:
    return f"{amount:,}"


def check_paid_equals_earned(names: dict[str, str], reports: dict[str, dict[str, Any]]) -> tuple[bool, str]:
    """Match what each node paid each peer against what that peer recorded as earned from it.

    ``reports`` maps node ids to their ``mu earnings --json``.  A payer may
    have signed a payment its host has not recorded yet (in flight); a host
    never earns more from a payer than the payer paid.  Returns whether every
    pair matches and the line to print.
    """
    paid = earned = in_flight = 0
    wrong: list[str] = []
    for payer, report in reports.items():
        for host, row in report["per_peer"].items():
            spent = int(row["spent"])
            if not spent:
                continue
            recorded = int(reports[host]["per_peer"].get(payer, {}).get("earned", 0)) if host in reports else 0
            paid += spent
            earned += recorded
            if recorded > spent:
                wrong.append(f"{names.get(host, host[:12])} recorded {recorded} from {names[payer]}, paid {spent}")
            in_flight += max(0, spent - recorded)
    everyone_earned = sum(int(r["earned"]) for r in reports.values())
    if everyone_earned != earned:
        wrong.append(f"{everyone_earned - earned} sats earned that no ledger paid")
    if wrong:
        return False, "paid does NOT equal earned: " + "; ".join(wrong)
    flight = f", {_sats(in_flight)} still in flight" if in_flight else ", none in flight"
    return True, (f"paid equals earned across all {len(reports)} ledgers: {_sats(paid)} sats paid = "
                  f"{_sats(earned)} sats earned{flight}")


async def settle_one_channel(host_dir: Path, host_name: str, payer_id: str, rpc: RPCClient) -> tuple[bool, str]:
    """Close the host's open channel from ``payer_id`` (``mu channels close``) and wait until it is mined."""
    channels = await _mu_json(host_dir, "channels")
    ours = [c for c in channels if c["peer"] == payer_id and c["role"] == "payee" and c["state"] == "open"]
    if not ours:
        return False, f"{host_name} has no open channel from the fetcher to settle"
    channel = max(ours, key=lambda c: c["total"])
    argv = [sys.executable, "-m", "node", "--data-dir", str(host_dir), "channels", "close", channel["channel_id"]]
    await trio.run_process(argv, capture_stdout=True, cwd=str(REPO_ROOT), env=_env())
    say(f"{host_name} closes channel {channel['channel_id'][:16]}... ({_sats(channel['total'])} sats from the "
        f"fetcher): its node broadcasts the close, the chain mines it")
    with trio.fail_after(SETTLE_DEADLINE), Ledger.open(host_dir / LEDGER_FILE) as ledger:  # WAL: read beside the node
        while True:
            settlements = (await trio.to_thread.run_sync(ledger.export))["settlements"]
            settled = [s for s in settlements if s["channel_id"] == channel["channel_id"]
                       and s["kind"] == "close" and s["state"] == "confirmed"]
            if settled:
                break
            await trio.sleep(SETTLE_POLL)  # polling the host's ledger, bounded by fail_after
    txid = settled[0]["txid"]
    tx = await rpc.call("getrawtransaction", txid, True)  # the chain's own word, not the ledger's
    block = await rpc.call("getblock", tx["blockhash"])
    confirmations = int(tx["confirmations"])
    return True, (f"{host_name} settled {_sats(settled[0]['amount'])} sats on chain: txid {txid}, confirmed at "
                  f"height {block['height']} ({confirmations} confirmation{'' if confirmations == 1 else 's'})")


async def demo(root: Path, hosts: list[dict[str, Any]], start_fetcher: Callable[[], Awaitable[dict[str, Any]]],
               rpc: RPCClient, sample: Path | None) -> int:
    """The main job: add on node-1, fetch by link on a node that joins after, settle one channel."""
    if sample is None:
        sample = root / "sample.bin"
        sample.write_bytes(os.urandom(DEMO_SIZE))
    started = time.monotonic()
    say(f"node-1 adds {sample.name}: encrypts it and pays the nodes closest to each chunk to store it")
    added = await ControlClient.from_data_dir(Path(hosts[0]["data_dir"])).run_stream(
        "add", {"path": str(sample.resolve())}, lambda e: None)
    print(f"node-1 added {sample.name} ({added['size']} bytes, {added['chunks']} chunks, "
          f"{added['replicas_confirmed']} replicas confirmed): {added['link']}", flush=True)
    fetcher = await start_fetcher()
    nodes = [*hosts, fetcher]
    name = f"node-{len(nodes)}"
    say(f"{name} joins now, holding none of the file's chunks, and fetches it by its link, paying each "
        f"host past its free allowance ({FREE_ALLOWANCE} sats, one chunk)")
    out = root / ("fetched-" + sample.name)
    got = await ControlClient.from_data_dir(Path(fetcher["data_dir"])).run_stream(
        "get", {"link": added["link"], "output": str(out)}, lambda e: None)
    same = out.read_bytes() == sample.read_bytes()
    print(f"{name} fetched it by its link in {got['seconds']} s ({got['chunks_fetched']} chunks from the network, "
          f"{got['local_chunks']} already local), {got['sats_spent']} sats spent: "
          f"{'byte-identical' if same else 'DIFFERENT BYTES'}", flush=True)

    names = {node["node_id"]: f"node-{i}" for i, node in enumerate(nodes, 1)}
    reports: dict[str, dict[str, Any]] = {}

    async def read_earnings(node: dict[str, Any]) -> None:
        reports[node["node_id"]] = await _mu_json(Path(node["data_dir"]), "earnings")

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(read_earnings, node)
    fetcher_id = fetcher["node_id"]
    print(f"ledgers (sats)              earned    spent   from {name}'s fetch")
    for node in nodes:
        report = reports[node["node_id"]]
        from_fetch = int(report["per_peer"].get(fetcher_id, {}).get("earned", 0))
        role = "(the fetcher)" if node is fetcher else (f"{_sats(from_fetch):>8}" if from_fetch else "       -")
        print(f"  {names[node['node_id']]:<6} {node['node_id'][:12]}  {_sats(report['earned']):>8} "
              f"{_sats(report['spent']):>8}   {role}")
    balanced, line = check_paid_equals_earned(names, reports)
    print(line, flush=True)
    served = {host: int(row["spent"]) for host, row in reports[fetcher_id]["per_peer"].items() if int(row["spent"])}
    paid_fetch = bool(served) and sum(served.values()) > 0
    if not paid_fetch:
        print(f"{name} paid no host: the fetch stayed within the free allowance")
    settled = False
    if served:
        best = max(served, key=lambda host: served[host])
        settled, line = await settle_one_channel(Path(nodes[[n["node_id"] for n in nodes].index(best)]["data_dir"]),
                                                 names[best], fetcher_id, rpc)
        print(line, flush=True)
    print(f"main job done in {time.monotonic() - started:.1f} s")
    return 0 if same and balanced and paid_fetch and settled else 3


def say(text: str) -> None:
    """What the devnet is doing now, on stderr: stdout keeps the results (or the ``--json`` line)."""
    print(f"... {text}", file=sys.stderr, flush=True)


async def run_devnet(root: Path, n_nodes: int, as_json: bool, run_demo: bool, sample: Path | None) -> int:
    """Start the devnet in ``root``, report it, wait for a signal (or run the demo), stop it all.

    With ``run_demo`` the last node is started by the demo, after the add.
    """
    code = 0
    procs: list[trio.Process] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        say(f"starting mu chain (regtest, a block every {BLOCK_INTERVAL:g} s) in {root / 'chain'}")
        process, url, cookie = await _start_chain(root / "chain")
        procs.append(process)
        try:
            node_dirs = [root / f"node-{i}" for i in range(1, n_nodes + 1)]
            for d in node_dirs:
                d.mkdir(parents=True, exist_ok=True)
                load_identity(d, create=True)
            async with RPCClient(url, cookie_path=cookie) as rpc:
                say(f"funding {n_nodes} wallets: one block to each, then {COINBASE_MATURITY} blocks to mature them")
                nodes = await _fund(rpc, node_dirs)
                height = await rpc.call("getblockcount")
                started_now = node_dirs[:-1] if run_demo else node_dirs  # the demo's fetcher joins later
                say("starting node-1 (mu node: chunk host, payer, settlement watcher)")
                first_proc, first_info = await _start_node(node_dirs[0], url, cookie, None)
                procs.append(first_proc)
                infos = [first_info]

                async def start_other(d: Path, slot: list) -> None:
                    slot.append(await _start_node(d, url, cookie, int(first_info["dht_port"])))

                if len(started_now) > 1:
                    say(f"starting node-2..node-{len(started_now)}, joining the DHT through node-1")
                slots: list[list] = [[] for _ in started_now[1:]]
                async with trio.open_nursery() as nursery:
                    for d, slot in zip(started_now[1:], slots):
                        nursery.start_soon(start_other, d, slot)
                for slot in slots:
                    procs.append(slot[0][0])
                    infos.append(slot[0][1])
                for node, info in zip(nodes, infos):
                    node.update(pid=info["pid"], port=info["port"], dht_port=info["dht_port"],
                                control_port=info["control_port"])
                summary = {"dir": str(root), "chain": {"url": url, "cookie": str(cookie), "pid": process.pid,
                                                       "height": height}, "nodes": nodes[:len(infos)]}
                if as_json:
                    print(json.dumps(summary), flush=True)
                else:
                    print(f"devnet in {root}: mu chain at {url} (height {height})")
                    for i, node in enumerate(nodes[:len(infos)], 1):
                        print(f"  node-{i} {node['node_id'][:16]}  tcp {node['port']}  dht {node['dht_port']}  "
                              f"{node['balance']} sats  (mu --data-dir {node['data_dir']} status)", flush=True)
                if run_demo:
                    async def start_fetcher() -> dict[str, Any]:
                        proc, info = await _start_node(node_dirs[-1], url, cookie, int(first_info["dht_port"]))
                        procs.append(proc)
                        nodes[-1].update(pid=info["pid"], port=info["port"], dht_port=info["dht_port"],
                                         control_port=info["control_port"])
                        return nodes[-1]

                    code = await demo(root, nodes[:-1], start_fetcher, rpc, sample)
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
    if run_demo and args.nodes < 2:
        parser.error("--demo needs at least 2 nodes: one to add the file, one to fetch it")
    if args.dir:
        return trio.run(run_devnet, Path(args.dir).resolve(), args.nodes, args.json, run_demo, sample)
    with tempfile.TemporaryDirectory(prefix="mu-devnet-") as tmp:
        return trio.run(run_devnet, Path(tmp), args.nodes, args.json, run_demo, sample)


if __name__ == "__main__":
    sys.exit(main())
