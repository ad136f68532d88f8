"""``mu chain``: the embedded regtest chain service (``specs/chain.md``).

Needs the ``chain`` extra (py-bitcoinkernel).  Public names:
``serve_chain`` (the service), ``ChainState`` (kernel + block log +
indexes), ``Mempool``, ``ChainNode`` (what RPC methods act on).
"""

from node.chain.mempool import Mempool, MempoolEntry, Rejected
from node.chain.methods import ChainNode
from node.chain.service import (
    CHAIN_DIR, COOKIE_FILE, DEFAULT_RPC_PORT, LOCK_FILE, PORT_FILE, chain_dir, serve_chain,
)
from node.chain.state import ChainState

__all__ = [
    "CHAIN_DIR", "COOKIE_FILE", "DEFAULT_RPC_PORT", "LOCK_FILE", "PORT_FILE",
    "ChainNode", "ChainState",
    "Mempool", "MempoolEntry", "Rejected", "chain_dir", "serve_chain",
]
