"""mu's side of scripts/bench-vs-bittorrent: a networked ``mu add`` and a paid ``mu get`` on a fresh devnet.

Everything mu does here goes through its command line (``mu add``, ``mu
get``, ``mu peers``, ``mu earnings``) against real ``mu chain`` and ``mu
node`` processes started as ``scripts/devnet`` starts them, so the figures
are what a user's commands take.  One run, on a devnet of its own::

    node-1  the uploader          node-2..4  the hosts (H1..H3)
    node-5  the spare candidate   node-6     a fetcher outside the replica set

1. every node up: node-1 adds the file (3 replicas, the default), timed to
   the command's end, which is when the last replica is confirmed;
2. node-5 stopped: node-1 adds the same file again (a fresh key, so new
   chunks), timed the same way; the file's only holders are now node-1 and
   H1..H3, each with every chunk (three replicas, three candidates up);
3. node-1 stops (it holds every chunk: left up it would be a fourth host)
   and node-5 restarts on its old ports: a fresh process holding none of the
   second file, which fetches it from H1..H3, paying past the free allowance;
4. node-5 (it keeps what it fetched), H2 and H3 stop; node-6, started only
   now, fetches the file from H1 alone.

Each fetch starts once the fetching node is up: its routing table lists
its hosts and its join has waited out the stopped nodes (JOIN_SETTLE), and
is the user's whole ``mu get`` command.  Beside it: the local
chunk count the node reports (must be 0), the time to the first byte in
the output's part file and, beside it, the start-up of the command alone
(``mu get --help`` on the same data dir, timed just before: the share of
the first byte spent before any request leaves), the CPU seconds of the fetching node, of the
command and of the hosts (``/proc/PID/stat`` before and after), the
fetching node's peak RSS (VmHWM of a process started for this fetch) and
the fetcher's ledger (sats spent, hosts paid).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import devnet
from bench_proc import Finished, cpu_seconds, peak_rss_mib, run_timed
from node.runtime.config import load_identity

MIB = 1 << 20
JOIN_DEADLINE = 30.0  # seconds for a node's routing table to list the peers it needs
JOIN_POLL = 0.2
# A fetcher joining through a host learns the stopped nodes from that host's table; its join lookup
# waits out their REQUEST_TIMEOUT (2 s) once, after which they are silent for SILENT_SECONDS (specs/dht.md
# §6 Silent addresses).  The fetch is timed once the node is up, so it starts after that wait, not in it.
JOIN_SETTLE = 2.0 + 1.0
FIRST_BYTE_POLL = 0.002  # stat the output directory this often until the first byte lands
EXIT_UNDER_REPLICATED = 5  # mu add: the link is good, some chunk has fewer replicas than asked


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AddFigures:
    seconds: float
    chunks: int
    replicas_confirmed: int
    under_replicated: int
    link: str
    node_cpu: float  # the adding node's CPU seconds during the command
    command_cpu: float  # the ``mu add`` process's own CPU seconds
    host_cpu: float  # the live hosts' CPU seconds during the command

    @property
    def cpu_seconds(self) -> float:
        """Every process's CPU seconds over the command: the adding node, the command, the hosts."""
        return self.node_cpu + self.command_cpu + self.host_cpu


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GetFigures:
    hosts: int
    seconds: float
    first_byte: float | None  # None: no byte seen before the command ended
    # ``mu get --help`` on the same data dir just before: the command's start-up
    # (interpreter, imports, parser) that every first byte pays before its request.
    startup: float
    startup_cpu: float
    local_chunks: int
    chunks_fetched: int
    sats_spent: int  # what ``mu get`` reported
    ledger_spent: int  # what the fetcher's ledger says it paid, all peers
    hosts_paid: int  # peers the ledger shows paid: no more than ``hosts``, or another node served it
    hosts_earned: int  # what the hosts' ledgers say they earned from the fetcher (less any still in flight)
    node_cpu: float  # the fetching node's CPU seconds during the command
    command_cpu: float  # the ``mu get`` process's own CPU seconds
    host_cpu: float  # all hosts' CPU seconds during the command
    peak_rss_mib: float  # the fetching node's VmHWM
    correct: bool

    @property
    def cpu_seconds(self) -> float:
        """Every process's CPU seconds over the command: the fetching node, the command, the hosts."""
        return self.node_cpu + self.command_cpu + self.host_cpu


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MuRun:
    add_all_up: AddFigures
    add_one_down: AddFigures
    get_3_hosts: GetFigures
    get_1_host: GetFigures


def _mu(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "node", "--data-dir", str(data_dir), *args]


def _mu_timed(argv: list[str]) -> Finished:
    return run_timed(argv, cwd=devnet.REPO_ROOT, env=devnet._env())


async def _wait_for_peers(data_dir: Path, wanted: set[str]) -> None:
    """Poll ``mu peers`` until the running node's routing table lists every node id in ``wanted``, then JOIN_SETTLE."""
    with trio.fail_after(JOIN_DEADLINE):
        while True:
            report = await devnet._mu_json(data_dir, "peers")
            if wanted <= {p["node_id"] for p in report["peers"]}:
                break
            await trio.sleep(JOIN_POLL)  # polling another process's table, bounded by fail_after
    await trio.sleep(JOIN_SETTLE)  # the join's own timeouts on stopped nodes, see JOIN_SETTLE


class Node:
    """One ``mu node`` of the devnet: its data dir, id, process and ports."""

    def __init__(self, data_dir: Path, url: str, cookie: Path, node_args: tuple[str, ...]) -> None:
        self.data_dir, self.url, self.cookie, self.node_args = data_dir, url, cookie, node_args
        self.node_id = load_identity(data_dir).node_id.hex()
        self.process: trio.Process | None = None
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def dht_port(self) -> int:
        return int(self.info["dht_port"])

    async def start(self, bootstrap: Node | None) -> None:
        self.process, self.info = await devnet._start_node(self.data_dir, self.url, self.cookie,
                                                           bootstrap.dht_port if bootstrap else None, self.node_args)

    def keep_ports(self) -> None:
        """Pin the ports it got to its config.toml, so a restart comes back where its peers' tables say it is."""
        (self.data_dir / "config.toml").write_text(
            f'listen = "127.0.0.1:{int(self.info["port"])}"\ndht_port = {self.dht_port}\n')

    async def stop(self) -> None:
        if self.process is not None:
            await devnet._stop(self.process)


async def _add(node: Node, hosts: list[Node], sample: Path, chunk_size: int | None = None) -> AddFigures:
    """Time ``mu add`` on ``node``; CPU of the command, of ``node`` and of ``hosts`` (the live nodes).

    ``chunk_size``: ``mu add --chunk-size`` (fixed-size chunks); None, the default content-defined ones.
    """
    node_cpu, host_cpu = cpu_seconds(node.pid), sum(cpu_seconds(h.pid) for h in hosts)
    sizing = ("--chunk-size", str(chunk_size)) if chunk_size is not None else ()
    done = await trio.to_thread.run_sync(_mu_timed, _mu(node.data_dir, "add", *sizing, str(sample), "--json"))
    node_cpu = cpu_seconds(node.pid) - node_cpu
    host_cpu = sum(cpu_seconds(h.pid) for h in hosts) - host_cpu
    if done.code not in (0, EXIT_UNDER_REPLICATED):
        raise RuntimeError(f"mu add exited with {done.code}: {done.stderr.strip()}")
    added = json.loads(done.stdout)
    return AddFigures(seconds=done.seconds, chunks=int(added["chunks"]), replicas_confirmed=int(added["replicas_confirmed"]),
                      under_replicated=int(added["under_replicated"]), link=str(added["link"]),
                      node_cpu=node_cpu, command_cpu=done.cpu_seconds, host_cpu=host_cpu)


def _watch_first_byte(out: Path, began: list[float], seen: list[float], ended: threading.Event) -> None:
    """Record when the first byte of the output (its part file, or the file) is on disk: blocks, not a size.

    Blocks rather than st_size because a fetcher may size its part file before
    it writes anything.  Runs in a thread of its own until the first byte or
    until the command has ended (``ended``): the trio loop may run late on a
    loaded machine, and a byte seen only after the end is no first byte.
    """
    while not ended.is_set():
        for entry in os.scandir(out.parent):
            try:
                written = entry.name.startswith(out.name) and entry.stat().st_blocks > 0
            except FileNotFoundError:  # the part file renamed over the output meanwhile
                continue
            if written:
                if not ended.is_set():
                    seen.append(time.monotonic() - began[0])  # set before the command starts (``_get``)
                return
        ended.wait(FIRST_BYTE_POLL)  # polling another process's file, stopped by the command's end


async def _get(fetcher: Node, hosts: list[Node], link: str, out: Path, digest: bytes) -> GetFigures:
    """Time ``mu get`` on ``fetcher``; CPU of it and the hosts, its peak RSS, its ledger after."""
    startup = await trio.to_thread.run_sync(_mu_timed, _mu(fetcher.data_dir, "get", "--help"))
    node_cpu, host_cpu = cpu_seconds(fetcher.pid), sum(cpu_seconds(h.pid) for h in hosts)
    first: list[float] = []
    ended = threading.Event()

    # The first byte counts from the moment the command is started, as its own time does (run_timed):
    # counted from before the thread hop, a small get's first byte could come "after" its end.
    began = [time.monotonic()]

    def timed_get() -> Finished:
        try:
            began[0] = time.monotonic()
            return _mu_timed(_mu(fetcher.data_dir, "get", link, "-o", str(out), "--json"))
        finally:
            ended.set()

    watcher = threading.Thread(target=_watch_first_byte, args=(out, began, first, ended), daemon=True)
    watcher.start()
    done = await trio.to_thread.run_sync(timed_get)
    watcher.join()
    node_cpu = cpu_seconds(fetcher.pid) - node_cpu
    host_cpu = sum(cpu_seconds(h.pid) for h in hosts) - host_cpu
    peak = peak_rss_mib(fetcher.pid)
    if done.code != 0:
        raise RuntimeError(f"mu get on {fetcher.data_dir.name} exited with {done.code}: {done.stderr.strip()}")
    got = json.loads(done.stdout)
    with open(out, "rb") as f:
        correct = hashlib.file_digest(f, "sha256").digest() == digest
    out.unlink()
    earnings = await devnet._mu_json(fetcher.data_dir, "earnings")
    paid = [row for row in earnings["per_peer"].values() if int(row["spent"]) > 0]
    earned = 0
    for host in hosts:
        from_fetcher = (await devnet._mu_json(host.data_dir, "earnings"))["per_peer"].get(fetcher.node_id, {})
        earned += int(from_fetcher.get("earned", 0))
    return GetFigures(hosts=len(hosts), seconds=done.seconds, first_byte=first[0] if first else None,
                      startup=startup.seconds, startup_cpu=startup.cpu_seconds,
                      local_chunks=int(got["local_chunks"]), chunks_fetched=int(got["chunks_fetched"]),
                      sats_spent=int(got["sats_spent"]), ledger_spent=int(earnings["spent"]), hosts_paid=len(paid),
                      hosts_earned=earned,
                      node_cpu=node_cpu, command_cpu=done.cpu_seconds, host_cpu=host_cpu, peak_rss_mib=peak,
                      correct=correct)


#: The nodes' terms: the devnet's (a free allowance of one chunk's price, so a paid window of 2
#: requests per host) or ``mu node``'s defaults (1,000 sats free per peer: a window of 10).
TERMS = {"devnet": devnet.NODE_ARGS, "default": ("--settle-poll", "1", "--loopback-devnet")}


async def run_mu(root: Path, sample: Path, digest: bytes, say: Callable[[str], None], terms: str = "devnet",
                 chunk_size: int | None = None) -> MuRun:
    """One run on a fresh devnet in ``root`` (see the module docstring), its nodes on ``terms``
    (``TERMS``), the adds cut into ``chunk_size`` chunks if given; every process is stopped after."""
    chain, url, cookie = await devnet._start_chain(root / "chain")
    nodes: list[Node] = []
    try:
        dirs = [root / f"node-{i}" for i in range(1, 7)]
        for d in dirs:
            d.mkdir()
            load_identity(d, create=True)
        async with devnet.RPCClient(url, cookie_path=cookie) as rpc:
            await devnet._fund(rpc, dirs)
        nodes = [Node(d, url, cookie, TERMS[terms]) for d in dirs]
        uploader, h1, h2, h3, spare, outsider = nodes
        await uploader.start(None)
        for node in (h1, h2, h3, spare):
            await node.start(uploader)
        spare.keep_ports()
        await _wait_for_peers(uploader.data_dir, {n.node_id for n in (h1, h2, h3, spare)})

        say("mu add, 3 replicas, every node up")
        all_up = await _add(uploader, [h1, h2, h3, spare], sample, chunk_size)
        await spare.stop()
        say("mu add again with node-5 (a replica candidate) stopped")
        one_down = await _add(uploader, [h1, h2, h3], sample, chunk_size)
        await uploader.stop()  # it holds every chunk: left up it would be a fourth host
        await spare.start(h1)
        await _wait_for_peers(spare.data_dir, {h1.node_id, h2.node_id, h3.node_id})
        say("paid mu get from 3 hosts on node-5 (stopped during the add, holds none of the file)")
        three = await _get(spare, [h1, h2, h3], one_down.link, root / "fetched-3-hosts.bin", digest)
        for node in (spare, h2, h3):  # node-5 now holds the chunks it fetched: it would be a second host
            await node.stop()
        await outsider.start(h1)
        await _wait_for_peers(outsider.data_dir, {h1.node_id})
        say("paid mu get from 1 host on node-6 (outside the replica set, holds none of the file)")
        one = await _get(outsider, [h1], one_down.link, root / "fetched-1-host.bin", digest)
        return MuRun(add_all_up=all_up, add_one_down=one_down, get_3_hosts=three, get_1_host=one)
    finally:
        with trio.CancelScope(shield=True):
            for node in reversed(nodes):
                await node.stop()
            await devnet._stop(chain)
