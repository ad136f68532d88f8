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
Then the sync part, the mission's folders kept the same on devices never
online together: node-N stops; node-1 (device A) runs ``mu sync add`` on a
``laptop/`` folder (a few files, a subdir), puts it on the paid hosts and
stops; node-N (device B) starts again and joins with ``mu sync add desktop
--link -``, converging from the hosts alone (its tree printed, its tree hash
equal to A's); B edits a file and stops, A starts again and receives the
edit.  Every wait polls the node's ``sync-status`` against a deadline.  The
demo greps the hosts' data dirs for the folder's names and a plaintext
marker, prints the sats the devices spent and the hosts earned, and checks
paid == earned across every ledger again.

Without ``--dir`` the network lives in a temporary directory removed at exit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
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
# The sync part: a sync step under load takes a few rounds (specs/sync.md §15: POLL_SECONDS 2.0 s).
SYNC_DEADLINE = 90.0
SYNC_POLL = 0.25
SYNC_PHOTO_SIZE = 1536 * 1024  # the larger of the folder's two photos: a few chunks


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


async def _start_node(data_dir: Path, url: str, cookie: Path, bootstrap: int | None,
                      node_args: tuple[str, ...] = NODE_ARGS) -> tuple[trio.Process, dict]:
    """Run ``mu node`` in ``data_dir`` with ``node_args``; return it and its ``node.json`` once it is up."""
    info_file = data_dir / "node.json"
    info_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), "node", "--chain-rpc", url,
            "--chain-cookie", str(cookie), *node_args]
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


async def _mu_json(data_dir: Path, *args: str, stdin: bytes = b"") -> Any:
    """``mu --data-dir DATA_DIR ARGS --json``, parsed; a failure stops the demo with mu's message."""
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), *args, "--json"]
    result = await trio.run_process(argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False,
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


@dataclass(frozen=True)
class DemoNet:
    """The demo's handle on the devnet: every node's summary, and starting or stopping one by its index."""

    root: Path
    nodes: list[dict[str, Any]]  # node-1 .. node-N as the summary has them; start() updates the ports
    start: Callable[[int, int | None], Awaitable[dict[str, Any]]]  # index, index of the node to join through
    stop: Callable[[int], Awaitable[None]]
    rpc: RPCClient

    def name(self, index: int) -> str:
        return f"node-{index + 1}"

    def dir(self, index: int) -> Path:
        return Path(self.nodes[index]["data_dir"])


def read_reports(net: DemoNet) -> dict[str, dict[str, Any]]:
    """Every node's earnings report (what ``mu earnings --json`` prints), by node id, read from its ledger file
    beside the node (WAL) rather than through one ``mu`` process per node: on a loaded machine the processes'
    start-up took most of the demo's time."""
    reports: dict[str, dict[str, Any]] = {}
    for node in net.nodes:
        with Ledger.open(Path(node["data_dir"]) / LEDGER_FILE) as ledger:
            reports[node["node_id"]] = ledger.earnings()
    return reports


async def file_part(net: DemoNet, sample: Path | None) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Add on node-1, fetch by link on node-N that joins only now, paid == earned, settle one channel."""
    if sample is None:
        sample = net.root / "sample.bin"
        sample.write_bytes(os.urandom(DEMO_SIZE))
    say(f"node-1 adds {sample.name}: encrypts it and pays the nodes closest to each chunk to store it")
    added = await ControlClient.from_data_dir(net.dir(0)).run_stream(
        "add", {"path": str(sample.resolve())}, lambda e: None)
    print(f"node-1 added {sample.name} ({added['size']} bytes, {added['chunks']} chunks, "
          f"{added['replicas_confirmed']} replicas confirmed): {added['link']}", flush=True)
    last = len(net.nodes) - 1
    fetcher = await net.start(last, 0)
    name = net.name(last)
    say(f"{name} joins now, holding none of the file's chunks, and fetches it by its link, paying each "
        f"host past its free allowance ({FREE_ALLOWANCE} sats, one chunk)")
    out = net.root / ("fetched-" + sample.name)
    got = await ControlClient.from_data_dir(net.dir(last)).run_stream(
        "get", {"link": added["link"], "output": str(out)}, lambda e: None)
    same = out.read_bytes() == sample.read_bytes()
    print(f"{name} fetched it by its link in {got['seconds']} s ({got['chunks_fetched']} chunks from the network, "
          f"{got['local_chunks']} already local), {got['sats_spent']} sats spent: "
          f"{'byte-identical' if same else 'DIFFERENT BYTES'}", flush=True)

    names = {node["node_id"]: net.name(i) for i, node in enumerate(net.nodes)}
    reports = await trio.to_thread.run_sync(read_reports, net)
    fetcher_id = fetcher["node_id"]
    print(f"ledgers (sats)              earned    spent   from {name}'s fetch")
    for node in net.nodes:
        report = reports[node["node_id"]]
        from_fetch = int(report["per_peer"].get(fetcher_id, {}).get("earned", 0))
        role = "(the fetcher)" if node is fetcher else (f"{_sats(from_fetch):>8}" if from_fetch else "       -")
        print(f"  {names[node['node_id']]:<6} {node['node_id'][:12]}  {_sats(report['earned']):>8} "
              f"{_sats(report['spent']):>8}   {role}")
    balanced, line = check_paid_equals_earned(names, reports)
    print(line, flush=True)
    served = {host: int(row["spent"]) for host, row in reports[fetcher_id]["per_peer"].items() if int(row["spent"])}
    if not served:
        print(f"{name} paid no host: the fetch stayed within the free allowance")
    settled = False
    if served:
        best = max(served, key=lambda host: served[host])
        settled, line = await settle_one_channel(net.dir([n["node_id"] for n in net.nodes].index(best)),
                                                 names[best], fetcher_id, net.rpc)
        print(line, flush=True)
    return same and balanced and bool(served) and settled, reports


def make_laptop(folder: Path, marker: bytes) -> None:
    """Device A's folder: four files, two in a subdir, each opening with ``marker`` (hosts must never see it)."""
    files = {
        "trip-itinerary.txt": b"Lisbon, 3-9 May: Alfama, Sintra, Cascais\n",
        "budget-2026.csv": b"rent,1200\nfood,450\ntravel,800\n",
        "photos/harbour-at-dawn.raw": os.urandom(SYNC_PHOTO_SIZE),
        "photos/lighthouse-keeper.raw": os.urandom(SYNC_PHOTO_SIZE // 4),
    }
    for name, body in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(marker + body)


def tree_digest(root: Path) -> tuple[int, str]:
    """Entry count and a hash of what sync carries (specs/sync.md §5 State format): each path, its mode, a
    file's mtime and bytes; a directory's mtime is not synced."""
    digest = hashlib.sha256()
    paths = sorted(root.rglob("*"))
    for path in paths:
        st = os.lstat(path)
        is_file = path.is_file() and not path.is_symlink()
        digest.update(f"{path.relative_to(root).as_posix()}\0{st.st_mode}\0{st.st_mtime_ns if is_file else 0}\0"
                      .encode())
        digest.update(hashlib.sha256(path.read_bytes() if is_file else b"").digest())
    return len(paths), digest.hexdigest()


def tree_lines(root: Path) -> list[str]:
    """``root``'s tree as the demo prints it: one line per entry, a directory with a slash."""
    lines = []
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        lines.append(f"    {name}/" if path.is_dir() else f"    {name:<32} {_sats(path.stat().st_size):>11} bytes")
    return lines


async def wait_sync(net: DemoNet, index: int, folder: Path, done: Callable[[dict[str, Any]], bool]) -> float | None:
    """Poll node ``index``'s ``sync-status`` for ``folder`` (what ``mu sync status --json`` prints) until ``done``.

    Returns the seconds it took, or None past ``SYNC_DEADLINE``: the demo waits on the node's word, never on a
    fixed delay.
    """
    started = time.monotonic()
    client = ControlClient.from_data_dir(net.dir(index))
    with trio.move_on_after(SYNC_DEADLINE):
        while not done(await client.call("POST", "sync-status", {"path": str(folder)})):
            await trio.sleep(SYNC_POLL)  # polling another process's rounds, bounded by move_on_after
        return time.monotonic() - started
    return None


def published(folder: Path) -> Callable[[dict[str, Any]], bool]:
    """Done once the device's state holds ``folder`` as it is on disk (its live entries and their bytes) and
    nothing is left to publish: ``pending_up`` counts what the change detector has noted, what no round has
    taken and a state not yet on the hosts (specs/sync.md §15 Status). Waiting for rounds instead is not
    enough: the detector reports a change only after its debounce and settling look."""
    def done(status: dict[str, Any]) -> bool:
        last = status.get("last_round") or {}
        if not last or "error" in last or status["pending_up"]:
            return False
        paths = list(folder.rglob("*"))
        size = sum(os.lstat(path).st_size for path in paths if path.is_symlink() or not path.is_dir())
        return bool(status["files"] == len(paths) and status["bytes"] == size)

    return done


def holds(folder: Path, digest: str) -> Callable[[dict[str, Any]], bool]:
    """Done once the last round ended cleanly, with no conflict, and ``folder`` holds the tree of ``digest``."""
    def done(status: dict[str, Any]) -> bool:
        last = status.get("last_round") or {}
        return bool(last) and "error" not in last and not last["conflicts"] and tree_digest(folder)[1] == digest

    return done


def find_leaks(host_dirs: list[Path], needles: list[bytes]) -> tuple[list[str], int, int]:
    """Grep every file of the hosts' data dirs for ``needles``: the leaks found, files and bytes read."""
    leaks: list[str] = []
    files = size = 0
    for host in host_dirs:
        for path in host.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                files, size = files + 1, size + len(data)
                leaks += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return leaks, files, size


def short_link(link: str) -> str:
    return f"{link[:20]}...{link[-6:]}"


async def edit_travels_back(net: DemoNet, editor: tuple[int, Path], receiver: tuple[int, Path],
                            via: int) -> float | None:
    """The editor's node puts an edit on the hosts and stops; the receiver's node starts again (joining
    through ``via``) and receives it with no conflict: the seconds that took, or None past the deadline."""
    (edited_by, edited), (receiver_index, receiving) = editor, receiver
    with open(edited / "trip-itinerary.txt", "ab") as f:
        f.write(b"+ day trip to Evora on the 7th\n")
    if await wait_sync(net, edited_by, edited, published(edited)) is None:
        return None
    _, digest = tree_digest(edited)
    await net.stop(edited_by)
    await net.start(receiver_index, via)
    return await wait_sync(net, receiver_index, receiving, holds(receiving, digest))


async def sync_part(net: DemoNet, before: dict[str, dict[str, Any]]) -> bool:
    """Device A (node-1) syncs a folder to the paid hosts and goes offline; device B (node-N), offline until
    then, joins with the write link and converges from the hosts alone; B's edit travels back to A the
    same way.  The hosts' data dirs hold no name and no plaintext; paid == earned across every ledger."""
    a, b = 0, len(net.nodes) - 1
    hosts = list(range(1, b))
    say(f"{net.name(b)} stops: device B stays offline while device A syncs")
    await net.stop(b)
    laptop, desktop = net.root / "laptop", net.root / "desktop"
    marker = b"mu-demo plaintext " + os.urandom(8).hex().encode()
    make_laptop(laptop, marker)
    entries, digest = tree_digest(laptop)
    links = await _mu_json(net.dir(a), "sync", "add", str(laptop))
    write_link = links["write_link"]
    print(f"{net.name(a)} (device A) syncs laptop/ ({entries} entries, "
          f"{_sats(sum(p.stat().st_size for p in laptop.rglob('*') if p.is_file()))} bytes) with mu sync add: "
          f"write link {short_link(write_link)}", flush=True)
    took = await wait_sync(net, a, laptop, published(laptop))
    if took is None:
        print(f"{net.name(a)} did not put laptop/ on the hosts within {SYNC_DEADLINE:g} s")
        return False
    print(f"{net.name(a)} put it on the paid hosts in {took:.1f} s (chunks, its state, its signed record); "
          f"{net.name(a)} stops: device A is offline from now on", flush=True)
    await net.stop(a)
    say(f"{net.name(b)} (device B) starts again, joining the DHT through {net.name(hosts[0])}, and joins the "
        "folder with mu sync add desktop --link - (the write link on stdin)")
    await net.start(b, hosts[0])
    desktop.mkdir()
    await _mu_json(net.dir(b), "sync", "add", str(desktop), "--link", "-", stdin=write_link.encode() + b"\n")
    took = await wait_sync(net, b, desktop, holds(desktop, digest))
    if took is None:
        print(f"{net.name(b)} did not converge from the hosts within {SYNC_DEADLINE:g} s")
        return False
    print(f"{net.name(b)} (device B) has the folder in desktop/ after {took:.1f} s, from the hosts alone "
          f"({net.name(a)} offline):", flush=True)
    print("\n".join(tree_lines(desktop)))
    print(f"device B's tree equals device A's: {entries} entries, tree hash {digest[:16]}", flush=True)

    took = await edit_travels_back(net, (b, desktop), (a, laptop), hosts[0])
    print(f"{net.name(b)} edited trip-itinerary.txt and stopped; {net.name(a)} started again and "
          + (f"received the edit in {took:.1f} s, no conflicts" if took is not None
             else f"did NOT receive the edit within {SYNC_DEADLINE:g} s"), flush=True)

    needles = sorted({os.fsencode(p.name) for p in laptop.rglob("*")} | {marker})
    leaks, files, size = await trio.to_thread.run_sync(find_leaks, [net.dir(i) for i in hosts], needles)
    span = net.name(hosts[0]) + (f"..{net.name(hosts[-1])}" if len(hosts) > 1 else "")
    print(f"no host's data dir ({span}: {files} files, {size / 2**20:.1f} MiB) holds any of the folder's "
          f"{len(needles) - 1} names or its plaintext marker" if not leaks else
          f"the hosts' data dirs LEAK: {'; '.join(leaks[:3])}", flush=True)

    after = await trio.to_thread.run_sync(read_reports, net)
    names = {node["node_id"]: net.name(i) for i, node in enumerate(net.nodes)}

    def delta(index: int, field: str) -> int:
        node_id = net.nodes[index]["node_id"]
        return int(after[node_id][field]) - int(before[node_id][field])

    devices = {i: delta(i, "spent") for i in (a, b)}
    earned = {i: delta(i, "earned") for i in hosts}
    print(f"sync part: the devices spent {_sats(sum(devices.values()))} sats ("
          + ", ".join(f"{net.name(i)} {_sats(v)}" for i, v in devices.items())
          + f"), the hosts earned {_sats(sum(earned.values()))} sats ("
          + ", ".join(f"{net.name(i)} {_sats(v)}" for i, v in earned.items()) + ")", flush=True)
    balanced, line = check_paid_equals_earned(names, after)
    print(line, flush=True)
    return took is not None and not leaks and balanced and sum(devices.values()) > 0


async def demo(net: DemoNet, sample: Path | None) -> int:
    """The main job: the file part (add, paid fetch, settle), then the sync part (devices never online together)."""
    started = time.monotonic()
    files_ok, reports = await file_part(net, sample)
    halfway = time.monotonic()
    synced = await sync_part(net, reports)
    done = time.monotonic()
    print(f"main job done in {done - started:.1f} s (file part {halfway - started:.1f} s, "
          f"sync part {done - halfway:.1f} s)")
    return 0 if files_ok and synced else 3


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
                    running = dict(enumerate(procs[1:]))  # node index -> its process; the chain is procs[0]

                    async def start(index: int, via: int | None) -> dict[str, Any]:
                        bootstrap = int(nodes[via]["dht_port"]) if via is not None else None
                        proc, info = await _start_node(node_dirs[index], url, cookie, bootstrap)
                        procs.append(proc)
                        running[index] = proc
                        nodes[index].update(pid=info["pid"], port=info["port"], dht_port=info["dht_port"],
                                            control_port=info["control_port"])
                        return nodes[index]

                    async def stop(index: int) -> None:
                        await _stop(running.pop(index))

                    code = await demo(DemoNet(root, nodes, start, stop, rpc), sample)
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
    if run_demo and args.nodes < 3:
        parser.error("--demo needs at least 3 nodes: two devices (node-1 also adds the file, node-N fetches it) "
                     "and a host")
    if args.dir:
        return trio.run(run_devnet, Path(args.dir).resolve(), args.nodes, args.json, run_demo, sample)
    with tempfile.TemporaryDirectory(prefix="mu-devnet-") as tmp:
        return trio.run(run_devnet, Path(tmp), args.nodes, args.json, run_demo, sample)


if __name__ == "__main__":
    sys.exit(main())
