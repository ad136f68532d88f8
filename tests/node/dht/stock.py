"""Drive stock ``kademlia`` servers running in a subprocess (see stock_kademlia.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

SCRIPT = Path(__file__).with_name("stock_kademlia.py")
#: Longest a single stock command may take (a stock RPC timeout is 5 s).
COMMAND_DEADLINE = 60.0


class StockNodes:
    """A subprocess hosting stock ``kademlia.network.Server`` instances."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = bytearray()

    async def command(self, **cmd: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with trio.fail_after(COMMAND_DEADLINE):
            await self.process.stdin.send_all((json.dumps(cmd) + "\n").encode())
            while b"\n" not in self._buffer:
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise RuntimeError("stock kademlia subprocess exited")
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return json.loads(line)


async def open_stock_nodes(nursery: trio.Nursery) -> StockNodes:
    """Start the subprocess in ``nursery``; it ends when its stdin closes."""
    process = await nursery.start(
        lambda task_status: trio.run_process(
            [sys.executable, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            check=False, task_status=task_status,
        )
    )
    return StockNodes(process)
