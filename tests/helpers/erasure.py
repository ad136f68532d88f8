"""What the erasure devnet tests share: calling the owner's control API, reading every node's earnings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node.api.control import ControlClient
from node.ledger import LEDGER_FILE, Ledger


def owner_call(node: dict[str, Any]) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """A blocking call of ``node``'s control API route (a stream route's final answer)."""
    client = ControlClient.from_data_dir(Path(node["data_dir"]))

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = trio.run(client.run_stream, path, body, lambda e: None)
        return answer

    return call


def earnings(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every node's ledger report (``Ledger.earnings``), by node ID, read once the nodes have stopped."""
    reports = {}
    for node in nodes:
        with Ledger.open(Path(node["data_dir"]) / LEDGER_FILE) as ledger:
            reports[node["node_id"]] = ledger.earnings()
    return reports
