"""``open_mu_node``: run ``mu node`` as a real subprocess for a test.

    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(tmp_path / "host", chain) as host:
            session = await transport.connect(host.node_id, "127.0.0.1", host.port)

The node listens on 127.0.0.1 port 0 and writes ``node.json`` (node id,
port, pid) in its data dir; we poll for that file with a bounded deadline.
``MuNode.kill()`` sends SIGKILL (a crash), ``MuNode.restart()`` starts the
same data dir again; on exit the process gets SIGTERM and is waited for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.helpers.chain import MuChain

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 60.0
STOP_DEADLINE = 30.0
POLL_INTERVAL = 0.02


@dataclass
class MuNode:
    data_dir: Path
    argv: list[str]
    env: dict[str, str]
    process: trio.Process | None = None
    node_id: bytes = b""
    port: int = 0
    address: str = ""
    starts: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    async def start(self) -> None:
        # We delete nothing: a node.json a killed node left carries its PID, not ours.
        info_file = self.data_dir / "node.json"
        self.starts += 1
        with open(self.data_dir / "mu-node.log", "ab") as log_file:
            self.process = await trio.lowlevel.open_process(
                self.argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=self.env)
        with trio.fail_after(START_DEADLINE):
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"mu node exited with {self.process.returncode}; see {self.data_dir}/mu-node.log")
                try:
                    info = json.loads(info_file.read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    info = None
                if info and info.get("pid") == self.process.pid:
                    break
                await trio.sleep(POLL_INTERVAL)  # polling a subprocess, bounded by fail_after
        self.node_id = bytes.fromhex(info["node_id"])
        self.port = int(info["port"])
        self.address = str(info["address"])
        self.extra = info

    async def kill(self) -> None:
        """SIGKILL: the crash case."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and wait (SIGKILL if it does not stop in time); returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_DEADLINE):
                return await self.process.wait()
            self.process.kill()
        return await self.process.wait()

    async def restart(self) -> None:
        await self.start()


@asynccontextmanager
async def open_mu_node(data_dir: Path, chain: MuChain, extra_args: list[str] | None = None, *,
                       loopback_devnet: bool = True) -> AsyncIterator[MuNode]:
    """Start ``mu node`` on a free port against ``chain``; stop it on exit.

    ``loopback_devnet`` (the default: every test node is on 127.0.0.1) lifts the
    DHT table's address-prefix limits for loopback peers (specs/dht.md §5.3).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "node", "--data-dir", str(data_dir), "node", "--listen", "127.0.0.1:0",
            "--chain-rpc", chain.url, "--chain-cookie", str(chain.cookie_path),
            *(["--loopback-devnet"] if loopback_devnet else []), *(extra_args or [])]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    node = MuNode(data_dir=data_dir, argv=argv, env=env)
    await node.start()
    try:
        yield node
    finally:
        with trio.CancelScope(shield=True):
            if node.process is not None and node.process.returncode is None:
                await node.stop()


def log_size(node: MuNode) -> int:
    """How long the node's log is now: pass it to ``log_lines_since`` to read only the next start's lines."""
    log_path = node.data_dir / "mu-node.log"
    return log_path.stat().st_size if log_path.exists() else 0


def log_lines_since(node: MuNode, offset: int) -> list[str]:
    """The lines the node logged past ``offset`` (every start appends to one ``mu-node.log``)."""
    with open(node.data_dir / "mu-node.log", "rb") as log_file:
        log_file.seek(offset)
        return log_file.read().decode(errors="replace").splitlines()
