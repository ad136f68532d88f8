"""A Tahoe-LAFS grid on loopback, timed ``tahoe put`` and ``tahoe get``: the reference of scripts/bench-vs-bittorrent.

Everything runs through the ``tahoe`` command of the benchmark venv
(``.venv-bench``, never the project's): one introducer, ``STORAGE_NODES``
storage nodes and one client node with no storage of its own, each a
``tahoe run`` process listening on 127.0.0.1 only.  The client encodes
``SHARES_NEEDED``-of-``SHARES_TOTAL`` and must place shares on every storage
node (``shares.happy``), the layout Tahoe's own docs use for a small grid
and the one PERFORMANCE.md's Tahoe figures come from.  Only the standard
library is used here (and scripts/bench_proc.py): the project's venv runs
this module, Tahoe runs in its own processes.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench_proc import cpu_seconds, run_timed

STORAGE_NODES = 4
SHARES_NEEDED = 2
SHARES_TOTAL = 4
START_DEADLINE = 90.0  # seconds for the grid to start and the client to see every storage node
STOP_DEADLINE = 20.0
POLL_INTERVAL = 0.2

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timed:
    """One ``tahoe`` command: its wall-clock seconds, the CPU seconds of it and every grid node, its output."""

    seconds: float
    cpu_seconds: float
    stdout: str


def _free_port() -> int:
    """A loopback TCP port free now (Tahoe wants its ports written into its config, not picked at bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _endpoint(port: int) -> list[str]:
    return [f"--port=tcp:{port}:interface=127.0.0.1", f"--location=tcp:127.0.0.1:{port}"]


class TahoeGrid:
    """The grid's processes, started by :meth:`start` and stopped by :meth:`stop`."""

    def __init__(self, tahoe: Path, root: Path) -> None:
        self.tahoe, self.root = tahoe, root
        self.processes: list[subprocess.Popen[bytes]] = []
        self.client = root / "client"
        self.web_port = 0

    def _run(self, *args: str) -> str:
        return self._timed(*args).stdout

    def _timed(self, *args: str) -> Timed:
        """Run one ``tahoe`` command to its end; time it and count its CPU and the grid's over the same span."""
        grid_before = sum(cpu_seconds(p.pid) for p in self.processes)
        done = run_timed([str(self.tahoe), *args])
        grid = sum(cpu_seconds(p.pid) for p in self.processes) - grid_before
        if done.code != 0:
            raise RuntimeError(f"tahoe {' '.join(args[:2])} exited with {done.code}: {done.stderr.strip()}")
        return Timed(done.seconds, done.cpu_seconds + grid, done.stdout)

    def _launch(self, node_dir: Path) -> None:
        log = open(node_dir.parent / f"{node_dir.name}.log", "ab")
        with log:
            self.processes.append(subprocess.Popen([str(self.tahoe), "run", "--allow-stdin-close", str(node_dir)],
                                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))

    def start(self) -> None:
        """Create and run the introducer, the storage nodes and the client; return once the client sees them all."""
        self.root.mkdir(parents=True, exist_ok=True)
        intro = self.root / "introducer"
        self._run("create-introducer", *_endpoint(_free_port()), str(intro))
        self._launch(intro)
        furl_file = intro / "private" / "introducer.furl"
        furl = self._poll(lambda: furl_file.read_text().strip() if furl_file.exists() else "", "the introducer's FURL")
        for i in range(1, STORAGE_NODES + 1):
            node = self.root / f"storage-{i}"
            self._run("create-node", *_endpoint(_free_port()), f"--introducer={furl}", f"--nickname=storage-{i}",
                      "--webport=none", str(node))
            self._launch(node)
        self.web_port = _free_port()
        self._run("create-client", f"--introducer={furl}", f"--webport=tcp:{self.web_port}:interface=127.0.0.1",
                  f"--shares-needed={SHARES_NEEDED}", f"--shares-happy={STORAGE_NODES}",
                  f"--shares-total={SHARES_TOTAL}", "--nickname=client", str(self.client))
        self._launch(self.client)
        self._poll(lambda: self._connected() >= STORAGE_NODES, f"the client connected to {STORAGE_NODES} storage nodes")

    def _connected(self) -> int:
        """How many storage servers the client's welcome page says it is connected to (0 while it starts)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/?t=json", timeout=5) as reply:
                welcome = json.load(reply)
        except OSError:
            return 0
        return sum(1 for server in welcome.get("servers", []) if str(server.get("connection_status", "")).lower().startswith("connected"))

    def _poll(self, ready: Callable[[], T], what: str) -> T:
        """Call ``ready`` until it returns something true; a node exiting or START_DEADLINE passing fails."""
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a tahoe node exited with {process.returncode}; see the logs in {self.root}")
            value = ready()
            if value:
                return value
            time.sleep(POLL_INTERVAL)  # polling child processes, bounded by START_DEADLINE
        raise RuntimeError(f"no {what} within {START_DEADLINE:.0f} s; see the logs in {self.root}")

    def put(self, path: Path) -> tuple[Timed, str]:
        """``tahoe put FILE``, timed as the user's command; returns the timing and the file's read cap."""
        timed = self._timed("-d", str(self.client), "put", str(path))
        return timed, timed.stdout.strip().splitlines()[-1]

    def get(self, cap: str, dest: Path) -> Timed:
        """``tahoe get CAP DEST``, timed as the user's command."""
        return self._timed("-d", str(self.client), "get", cap, str(dest))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
