"""A real node process for transport tests: ChunkStore + ChunkServer + transport.

Usage: python -m tests.helpers.transport_node STORE_DIR SEED_HEX [CHUNKS]
Stores CHUNKS deterministic chunks, prints "PORT NODE_ID_HEX" and serves
until its stdin is closed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from node.store import ChunkStore
from node.transport import ChunkServer, Limits, open_transport
from protocol.identity import Identity
from tests.helpers.transport import chunk, payment_key


async def main(root: Path, seed: bytes, chunks: int) -> None:
    store = ChunkStore(root)
    for i in range(chunks):
        store.put(*chunk(i, 20_000))
    identity = Identity(seed)
    limits = Limits(handshake_timeout=5.0)
    async with open_transport(identity, ChunkServer(store), payment_key=payment_key(0), limits=limits) as transport:
        print(transport.port, identity.node_id.hex(), flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 8)
