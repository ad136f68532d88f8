"""The node's Bitcoin client side: the JSON-RPC client (``rpc``) and the wallet (``wallet``).

Both talk to any Bitcoin Core JSON-RPC server: ``mu chain`` (node/chain) or a
real bitcoind (specs/chain.md).
"""
