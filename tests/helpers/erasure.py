"""What the erasure devnet tests share: calling the owner's control API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node.api.control import ControlClient


def owner_call(node: dict[str, Any]) -> Callable[[str, dict[str, Any]], dict[str, Any]]:
    """A blocking call of ``node``'s control API route (a stream route's final answer)."""
    client = ControlClient.from_data_dir(Path(node["data_dir"]))

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = trio.run(client.run_stream, path, body, lambda e: None)
        return answer

    return call

