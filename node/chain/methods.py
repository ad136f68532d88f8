"""The Bitcoin Core JSON-RPC subset ``mu chain`` answers (``specs/chain.md`` §4.3 Methods).

Each method takes the :class:`ChainNode` and its parameters by name; the
dispatcher maps positional or named JSON parameters onto them.  Shapes and
error codes/messages follow bitcoind wherever bitcoind has them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from node.chain.mempool import Mempool, MempoolEntry, Rejected
from node.chain.state import ChainState, TxView
from node.bitcoin.rpc import (
    RPC_DESERIALIZATION_ERROR,
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_MISC_ERROR,
    RPC_TYPE_ERROR,
    RPC_VERIFY_ERROR,
    RPCError,
    btc_to_sats,
    sats_to_btc,
)
from protocol.bitcoin.bech32 import decode_address, encode_address
from protocol.bitcoin.block import BlockHeader
from protocol.bitcoin.script import output_type
from protocol.bitcoin.serialize import Reader
from protocol.bitcoin.tx import Transaction

NETWORK = "regtest"
#: Blocks one generatetoaddress call may mine.
MAX_GENERATE_BLOCKS = 1_000
#: Descriptors one scantxoutset call may carry.
MAX_SCAN_DESCRIPTORS = 1_000
#: sendrawtransaction's default maxfeerate, BTC per kvB (bitcoind's 0.10).
DEFAULT_MAX_FEE_RATE_SATS_PER_KVB = 10_000_000
REGTEST_DIFFICULTY = 4.656542373906925e-10
# Bitcoin Core's names for output types.
_CORE_TYPES = {
    "p2wpkh": "witness_v0_keyhash", "p2wsh": "witness_v0_scripthash",
    "p2tr": "witness_v1_taproot", "p2pkh": "pubkeyhash", "p2sh": "scripthash",
}


class ChainNode:
    """What the RPC methods act on: the chain, its mempool, and the miner."""

    def __init__(self, state: ChainState) -> None:
        self.state = state
        self.mempool = Mempool(state)
        self.stop_requested = trio.Event()
        self._arrival = trio.Event()

    def add_transaction(self, raw: bytes) -> MempoolEntry:
        """Add to the mempool; the first transaction into an empty one wakes the miner."""
        was_empty = len(self.mempool) == 0
        entry = self.mempool.add(raw)
        if was_empty:
            self._arrival.set()
        return entry

    async def transaction_arrived(self) -> None:
        """Return once a transaction entered an empty mempool since the last return.

        The service's own miner waits on this (specs/chain.md §3.4 When
        blocks are mined), so a funding confirms at once, as on a devnet.
        """
        await self._arrival.wait()
        self._arrival = trio.Event()

    async def generate(self, count: int, script_pubkey: bytes) -> list[str]:
        """Mine ``count`` blocks paying ``script_pubkey``, mempool first."""
        hashes = []
        for _ in range(count):
            entries = self.mempool.template()
            hashes.append(self._mine_one(script_pubkey, entries))
            await trio.lowlevel.checkpoint()  # keep answering other clients
        return hashes

    def _mine_one(self, script_pubkey: bytes, entries: list[MempoolEntry]) -> str:
        txs = [(e.raw, e.txid, e.wtxid) for e in entries]
        raw = self.state.build_next_block(script_pubkey, txs, sum(e.fee for e in entries), int(time.time()))
        result = self.state.submit_block(raw)
        if not result.accepted:
            if not entries:
                raise RPCError(RPC_MISC_ERROR, f"the kernel rejected our block: {result.reason}")
            # The kernel saw something our mempool checks missed: start over empty.
            self.mempool.clear()
            return self._mine_one(script_pubkey, [])
        self.mempool.refresh()
        return self.state.tip_hash[::-1].hex()


# -- parameter helpers ---------------------------------------------------------


def _type_error(value: Any, expected: str) -> RPCError:
    kind = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object"}.get(type(value), "null")
    return RPCError(RPC_TYPE_ERROR, f"JSON value of type {kind} is not of expected type {expected}")


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(value, "number")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(value, "string")
    return value


def _hash(value: Any, name: str) -> bytes:
    text = _str(value)
    if len(text) != 64:
        raise RPCError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(text)}, for '{text}')")
    try:
        return bytes.fromhex(text)[::-1]
    except ValueError:
        raise RPCError(RPC_INVALID_PARAMETER, f"{name} must be hexadecimal string (not '{text}')") from None


def _verbosity(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    return _int(value)


def _address_script(address: Any) -> bytes:
    try:
        return decode_address(_str(address), NETWORK)
    except ValueError:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address") from None


def script_json(script: bytes) -> dict[str, Any]:
    kind = output_type(script)
    out: dict[str, Any] = {"hex": script.hex(), "type": _CORE_TYPES.get(kind, kind)}
    if kind in ("p2wpkh", "p2wsh", "p2tr"):
        out["address"] = encode_address(script, NETWORK)
    return out


def tx_json(tx: Transaction, raw: bytes) -> dict[str, Any]:
    vin: list[dict[str, Any]] = []
    for txin in tx.inputs:
        if txin.outpoint.txid == bytes(32) and txin.outpoint.index == 0xFFFFFFFF:
            item: dict[str, Any] = {"coinbase": txin.script_sig.hex()}
        else:
            item = {"txid": txin.outpoint.txid_hex(), "vout": txin.outpoint.index,
                    "scriptSig": {"asm": "", "hex": txin.script_sig.hex()}}
        if txin.witness:
            item["txinwitness"] = [w.hex() for w in txin.witness]
        item["sequence"] = txin.sequence
        vin.append(item)
    vout = [
        {"value": sats_to_btc(o.value), "n": n, "scriptPubKey": script_json(o.script_pubkey)}
        for n, o in enumerate(tx.outputs)
    ]
    return {
        "txid": tx.txid_hex(), "hash": tx.wtxid_hex(), "version": tx.version,
        "size": len(raw), "vsize": tx.vsize(), "weight": tx.weight(), "locktime": tx.locktime,
        "vin": vin, "vout": vout, "hex": raw.hex(),
    }


# -- methods ---------------------------------------------------------------------


def _chainwork(height: int) -> str:
    return f"{2 * (height + 1):064x}"  # each regtest block is work 2 (target 2^255)


async def getblockchaininfo(node: ChainNode) -> dict[str, Any]:
    s = node.state
    return {
        "chain": NETWORK, "blocks": s.height, "headers": s.height,
        "bestblockhash": s.tip_hash[::-1].hex(), "difficulty": REGTEST_DIFFICULTY,
        "time": s.headers[-1].time, "mediantime": s.median_time_past(),
        "verificationprogress": 1, "initialblockdownload": False,
        "chainwork": _chainwork(s.height), "size_on_disk": s.block_log.path.stat().st_size,
        "pruned": False, "warnings": [],
    }


async def getblockcount(node: ChainNode) -> int:
    return node.state.height


async def getbestblockhash(node: ChainNode) -> str:
    return node.state.tip_hash[::-1].hex()


async def getblockhash(node: ChainNode, height: Any) -> str:
    h = _int(height)
    if not 0 <= h <= node.state.height:
        raise RPCError(RPC_INVALID_PARAMETER, "Block height out of range")
    return node.state.hashes[h][::-1].hex()


def _block_height(node: ChainNode, blockhash: Any) -> int:
    height = node.state.heights.get(_hash(blockhash, "blockhash"))
    if height is None:
        raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
    return height


async def getblock(node: ChainNode, blockhash: Any, verbosity: Any = 1) -> Any:
    level = _verbosity(verbosity)
    height = _block_height(node, blockhash)
    raw = node.state.block_bytes(height)
    if level == 0:
        return raw.hex()
    if level != 1:
        raise RPCError(RPC_INVALID_PARAMETER, "Verbosity must be 0 or 1 in mu chain")
    s = node.state
    header: BlockHeader = s.headers[height]
    txids = [t.txid_hex() for t in _block_transactions(raw)]
    out: dict[str, Any] = {
        "hash": header.hash_hex(), "confirmations": s.height - height + 1, "height": height,
        "version": header.version, "versionHex": f"{header.version & 0xFFFFFFFF:08x}",
        "merkleroot": header.merkle_root[::-1].hex(), "time": header.time,
        "mediantime": s.median_time_past(height), "nonce": header.nonce, "bits": f"{header.bits:08x}",
        "difficulty": REGTEST_DIFFICULTY, "chainwork": _chainwork(height), "nTx": len(txids),
        "size": len(raw), "tx": txids,
    }
    if height > 0:
        out["previousblockhash"] = s.hashes[height - 1][::-1].hex()
    if height < s.height:
        out["nextblockhash"] = s.hashes[height + 1][::-1].hex()
    return out


def _block_transactions(raw: bytes) -> list[Transaction]:
    reader = Reader(raw[80:])
    return [Transaction.read_from(reader) for _ in range(reader.compact_size())]


async def getrawtransaction(node: ChainNode, txid: Any, verbose: Any = False, blockhash: Any = None) -> Any:
    key = _hash(txid, "parameter 1")
    level = _verbosity(verbose)
    entry = node.mempool.entries.get(key)
    found: tuple[TxView, int, int] | None = None
    if entry is None:
        found = node.state.transaction(key)
        if found is None or (blockhash is not None and found[1] != _block_height(node, blockhash)):
            raise RPCError(RPC_INVALID_ADDRESS_OR_KEY,
                           "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.")
    raw = entry.raw if entry is not None else found[0].raw  # type: ignore[index]
    if not level:
        return raw.hex()
    out = tx_json(Transaction.parse(raw), raw)
    if found is not None:
        height = found[1]
        out["blockhash"] = node.state.hashes[height][::-1].hex()
        out["confirmations"] = node.state.height - height + 1
        out["time"] = out["blocktime"] = node.state.headers[height].time
    return out


async def gettxout(node: ChainNode, txid: Any, n: Any, include_mempool: Any = True) -> Any:
    key, vout = _hash(txid, "txid"), _int(n)
    s = node.state
    if include_mempool and (key, vout) in node.mempool.spenders:
        return None
    coin = s.utxos.get((key, vout))
    confirmations = 0
    if coin is not None:
        confirmations = s.height - coin.height + 1
        value, script, coinbase = coin.value, coin.script_pubkey, coin.coinbase
    elif include_mempool and key in node.mempool.entries and vout < len(node.mempool.entries[key].tx.outputs):
        out = node.mempool.entries[key].tx.outputs[vout]
        value, script, coinbase = out.value, out.script_pubkey, False
    else:
        return None
    return {
        "bestblock": s.tip_hash[::-1].hex(), "confirmations": confirmations,
        "value": sats_to_btc(value), "scriptPubKey": script_json(script), "coinbase": coinbase,
    }


def _max_fee_rate(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_FEE_RATE_SATS_PER_KVB
    try:
        return btc_to_sats(value)
    except (ValueError, ArithmeticError):
        raise RPCError(RPC_TYPE_ERROR, "Amount is not a number or string") from None


def _decode_hex(value: Any) -> bytes:
    try:
        return bytes.fromhex(_str(value))
    except ValueError:
        raise RPCError(RPC_DESERIALIZATION_ERROR, "TX decode failed. Make sure the tx has at least one input.") from None


async def sendrawtransaction(node: ChainNode, hexstring: Any, maxfeerate: Any = None) -> str:
    raw = _decode_hex(hexstring)
    limit = _max_fee_rate(maxfeerate)
    try:
        entry = node.mempool.check(raw)
    except Rejected as exc:
        if exc.reason == "txn-already-in-mempool":
            return Transaction.parse(raw).txid_hex()  # bitcoind re-announces and succeeds
        raise RPCError(exc.code, exc.reason) from None
    if limit and entry.fee * 1000 > limit * entry.vsize:
        raise RPCError(RPC_VERIFY_ERROR, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")
    node.add_transaction(raw)
    return entry.txid[::-1].hex()


async def testmempoolaccept(node: ChainNode, rawtxs: Any, maxfeerate: Any = None) -> list[dict[str, Any]]:
    if not isinstance(rawtxs, list):
        raise _type_error(rawtxs, "array")
    if len(rawtxs) != 1:
        raise RPCError(RPC_INVALID_PARAMETER, "mu chain tests one transaction at a time")
    limit = _max_fee_rate(maxfeerate)
    raw = _decode_hex(rawtxs[0])
    try:
        entry = node.mempool.check(raw)
    except Rejected as exc:
        if exc.code == RPC_DESERIALIZATION_ERROR:
            raise RPCError(exc.code, exc.reason) from None
        tx = Transaction.parse(raw)
        return [{"txid": tx.txid_hex(), "wtxid": tx.wtxid_hex(), "allowed": False, "reject-reason": exc.reason}]
    result: dict[str, Any] = {"txid": entry.txid[::-1].hex(), "wtxid": entry.wtxid[::-1].hex()}
    if limit and entry.fee * 1000 > limit * entry.vsize:
        result.update(allowed=False, **{"reject-reason": "max-fee-exceeded"})
    else:
        result.update(allowed=True, vsize=entry.vsize, fees={"base": sats_to_btc(entry.fee)})
    return [result]


async def getrawmempool(node: ChainNode, verbose: Any = False) -> Any:
    if not _verbosity(verbose):
        return [txid[::-1].hex() for txid in node.mempool.entries]
    return {
        txid[::-1].hex(): {
            "vsize": e.vsize, "weight": e.weight, "fees": {"base": sats_to_btc(e.fee)},
            "wtxid": e.wtxid[::-1].hex(),
            "depends": sorted({i.outpoint.txid_hex() for i in e.tx.inputs if i.outpoint.txid in node.mempool.entries}),
        }
        for txid, e in node.mempool.entries.items()
    }


def _descriptor_script(desc: Any) -> tuple[str, bytes]:
    if isinstance(desc, dict):
        desc = desc.get("desc")
    text = _str(desc).split("#", 1)[0]
    if text.startswith("addr(") and text.endswith(")"):
        return text, _address_script(text[5:-1])
    if text.startswith("raw(") and text.endswith(")"):
        try:
            return text, bytes.fromhex(text[4:-1])
        except ValueError:
            pass
    raise RPCError(RPC_INVALID_ADDRESS_OR_KEY, f"mu chain supports only addr() and raw() descriptors, not '{text}'")


async def scantxoutset(node: ChainNode, action: Any, scanobjects: Any = None) -> Any:
    verb = _str(action)
    if verb in ("abort", "status"):
        return False if verb == "abort" else None
    if verb != "start":
        raise RPCError(RPC_INVALID_PARAMETER, "Invalid action '%s'" % verb)
    if not isinstance(scanobjects, list):
        raise RPCError(RPC_MISC_ERROR, "scanobjects argument is required for the start action")
    if len(scanobjects) > MAX_SCAN_DESCRIPTORS:
        raise RPCError(RPC_INVALID_PARAMETER, f"at most {MAX_SCAN_DESCRIPTORS} descriptors per scan")
    wanted = dict((script, desc) for desc, script in map(_descriptor_script, scanobjects))
    s = node.state
    unspents = []
    total = 0
    for (txid, vout), coin in s.utxos.items():
        desc = wanted.get(coin.script_pubkey)
        if desc is None:
            continue
        total += coin.value
        unspents.append({
            "txid": txid[::-1].hex(), "vout": vout, "scriptPubKey": coin.script_pubkey.hex(),
            "desc": desc, "amount": sats_to_btc(coin.value), "coinbase": coin.coinbase,
            "height": coin.height, "blockhash": s.hashes[coin.height][::-1].hex(),
            "confirmations": s.height - coin.height + 1,
        })
    return {
        "success": True, "txouts": len(s.utxos), "height": s.height,
        "bestblock": s.tip_hash[::-1].hex(), "unspents": unspents, "total_amount": sats_to_btc(total),
    }


async def generatetoaddress(node: ChainNode, nblocks: Any, address: Any, maxtries: Any = None) -> list[str]:
    count = _int(nblocks)
    script = _address_script(address)
    if not 0 <= count <= MAX_GENERATE_BLOCKS:
        raise RPCError(RPC_INVALID_PARAMETER, f"nblocks must be 0..{MAX_GENERATE_BLOCKS}")
    return await node.generate(count, script)


async def stop(node: ChainNode) -> str:
    node.stop_requested.set()
    return "mu chain stopping"


Method = Callable[..., Awaitable[Any]]
METHODS: dict[str, Method] = {
    f.__name__: f
    for f in (
        getblockchaininfo, getblockcount, getbestblockhash, getblockhash, getblock,
        getrawtransaction, gettxout, sendrawtransaction, testmempoolaccept, getrawmempool,
        scantxoutset, generatetoaddress, stop,
    )
}
