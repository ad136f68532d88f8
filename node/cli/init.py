"""``mu init``: create the data dir and the node's identity."""

from __future__ import annotations

import argparse
import json

from node.runtime.config import load_identity, resolve_data_dir


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("init", help="create the data dir and the node identity")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = load_identity(data_dir, create=True)
    if args.json:
        print(json.dumps({"data_dir": str(data_dir), "node_id": identity.node_id.hex()}))
    else:
        print(f"data dir: {data_dir}")
        print(f"node id:  {identity.node_id.hex()}")
    return 0
