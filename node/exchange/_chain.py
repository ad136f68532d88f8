"""What the exchange and the settlement watcher ask of the chain backend.

A thin layer over Bitcoin Core JSON-RPC (``node.bitcoin.rpc.RPCClient``), so the
same code talks to ``mu chain`` and to bitcoind (specs/chain.md).  Amounts
come back as int sats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from node.bitcoin.rpc import RPC_INVALID_ADDRESS_OR_KEY, RPCError, btc_to_sats


@dataclass(frozen=True, slots=True)
class FundingOutput:
    """An unspent output as ``gettxout`` reports it (mempool included)."""

    value: int
    script_pubkey: bytes
    confirmations: int


class Caller(Protocol):
    async def call(self, method: str, *params: Any) -> Any: ...


class ChainView:
    """The handful of chain queries mu's payments need."""

    def __init__(self, rpc: Caller) -> None:
        self.rpc = rpc

    async def tip_height(self) -> int:
        """Height of the best block."""
        return int(await self.rpc.call("getblockcount"))

    async def unspent_output(self, txid_hex: str, vout: int) -> FundingOutput | None:
        """The output ``txid_hex:vout`` if it exists unspent, else None.

        Mempool outputs count (with 0 confirmations) so the payee can tell
        "not yet confirmed" from "spent or never existed".
        """
        reply = await self.rpc.call("gettxout", txid_hex, vout, True)
        if reply is None:
            return None
        return FundingOutput(
            value=btc_to_sats(reply["value"]),
            script_pubkey=bytes.fromhex(reply["scriptPubKey"]["hex"]),
            confirmations=int(reply.get("confirmations", 0)),
        )

    async def broadcast(self, raw_hex: str) -> str:
        """``sendrawtransaction``; returns the txid (display hex)."""
        return str(await self.rpc.call("sendrawtransaction", raw_hex))

    async def confirmation_height(self, txid_hex: str) -> tuple[bool, int | None]:
        """(known, height): whether the node knows ``txid_hex`` and its block height.

        ``(True, None)`` means it is in the mempool; ``(False, None)`` that
        the backend has never seen it (or dropped it).
        """
        try:
            reply = await self.rpc.call("getrawtransaction", txid_hex, True)
        except RPCError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                return False, None
            raise
        confirmations = int(reply.get("confirmations", 0) or 0)
        if confirmations <= 0:
            return True, None
        tip = await self.tip_height()
        return True, tip - confirmations + 1
