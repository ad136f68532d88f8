"""mu chain's JSON-RPC over HTTP: bitcoind's shapes, codes, auth and limits."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import pytest
import trio

from node.chain.http import MAX_BODY_BYTES
from node.bitcoin.rpc import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_METHOD_NOT_FOUND,
    RPC_TYPE_ERROR,
    RPCAuthError,
    RPCClient,
    RPCError,
)
from tests.helpers.chain import MuChain

ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # BIP 173's P2WPKH program on regtest


async def raw_http(chain: MuChain, body: bytes, *, auth: str | None = None,
                   length: int | None = None, method: str = "POST") -> tuple[int, bytes]:
    """One hand-made HTTP request; returns status and body."""
    parts = urlsplit(chain.url)
    token = auth if auth is not None else chain.cookie_path.read_text().strip()
    head = (
        f"{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Basic {base64.b64encode(token.encode()).decode()}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        await stream.send_all(head + body)
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


async def test_bad_requests_get_errors_and_service_keeps_serving(chain: MuChain) -> None:
    status, body = await raw_http(chain, b"{not json")
    assert status == 500 and json.loads(body)["error"]["code"] == -32700
    status, body = await raw_http(chain, b"[" * 100_000 + b"]" * 100_000)
    assert status == 500 and json.loads(body)["error"]["code"] == -32700
    status, body = await raw_http(chain, b'{"method": "nosuch", "params": [], "id": 1}')
    assert status == 404 and json.loads(body)["error"] == {"code": -32601, "message": "Method not found"}
    status, _ = await raw_http(chain, b'{"method": "getblockcount"}', auth="__cookie__:wrong")
    assert status == 401
    status, _ = await raw_http(chain, b"", length=MAX_BODY_BYTES + 1)
    assert status == 413
    status, _ = await raw_http(chain, b"", method="GET")
    assert status == 405
    with pytest.raises(RPCError) as missing:
        await chain.rpc.call("nosuch")
    assert missing.value.code == RPC_METHOD_NOT_FOUND
    async with RPCClient(chain.url, user="__cookie__", password="nope") as wrong:
        with pytest.raises(RPCAuthError):
            await wrong.call("getblockcount")
    assert await chain.rpc.call("getblockcount") == 0  # still serving


async def test_jsonrpc_2_batch_and_named_params(chain: MuChain) -> None:
    status, body = await raw_http(chain, json.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "getblockhash", "params": {"height": 0}},
        {"jsonrpc": "2.0", "id": 2, "method": "getblockhash", "params": [7]},
    ]).encode())
    replies = json.loads(body)
    assert status == 200
    assert replies[0] == {"jsonrpc": "2.0", "id": 1,
                          "result": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"}
    assert replies[1]["error"] == {"code": RPC_INVALID_PARAMETER, "message": "Block height out of range"}


async def test_block_methods(chain: MuChain) -> None:
    rpc = chain.rpc
    hashes = await rpc.call("generatetoaddress", 3, ADDRESS)
    assert len(hashes) == 3
    assert await rpc.call("getblockcount") == 3
    assert await rpc.call("getbestblockhash") == hashes[-1]
    assert await rpc.call("getblockhash", 2) == hashes[1]
    info = await rpc.call("getblockchaininfo")
    assert info["chain"] == "regtest" and info["blocks"] == 3 and info["bestblockhash"] == hashes[-1]
    block = await rpc.call("getblock", hashes[0])
    assert block["height"] == 1 and block["confirmations"] == 3 and block["nTx"] == 1
    assert block["nextblockhash"] == hashes[1] and block["bits"] == "207fffff"
    assert block["versionHex"] == "20000000"
    raw = await rpc.call("getblock", hashes[0], 0)
    assert bytes.fromhex(raw)[:4] == bytes.fromhex("00000020")
    coinbase = await rpc.call("getrawtransaction", block["tx"][0], True)
    assert coinbase["vin"][0]["coinbase"].startswith("51")  # BIP 34: OP_1 for height 1
    assert coinbase["vout"][0]["scriptPubKey"]["address"] == ADDRESS
    assert coinbase["blockhash"] == hashes[0]
    out = await rpc.call("gettxout", block["tx"][0], 0)
    assert out["coinbase"] is True and out["confirmations"] == 3
    assert out["value"] == 50
    scan = await rpc.call("scantxoutset", "start", [f"addr({ADDRESS})"])
    assert scan["success"] and len(scan["unspents"]) == 3 and scan["total_amount"] == 150
    raw_scan = await rpc.call("scantxoutset", "start", [{"desc": "raw(0014751e76e8199196d454941c45d1b3a323f1433bd6)"}])
    assert raw_scan["total_amount"] == 150


async def test_block_method_errors(chain: MuChain) -> None:
    rpc = chain.rpc
    cases = [
        (("getblockhash", 1), RPC_INVALID_PARAMETER, "Block height out of range"),
        (("getblock", "00" * 32), RPC_INVALID_ADDRESS_OR_KEY, "Block not found"),
        (("getblock", "zz"), RPC_INVALID_PARAMETER, "blockhash must be of length 64 (not 2, for 'zz')"),
        (("getblockhash", "1"), RPC_TYPE_ERROR, "JSON value of type string is not of expected type number"),
        (("getrawtransaction", "11" * 32), RPC_INVALID_ADDRESS_OR_KEY,
         "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."),
        (("generatetoaddress", 1, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"), RPC_INVALID_ADDRESS_OR_KEY,
         "Error: Invalid address"),
        (("sendrawtransaction", "00"), -22, "TX decode failed. Make sure the tx has at least one input."),
    ]
    for (method, *params), code, message in cases:
        with pytest.raises(RPCError) as err:
            await rpc.call(method, *params)
        assert (err.value.code, err.value.message) == (code, message), method
    assert await rpc.call("gettxout", "11" * 32, 0) is None
    assert await rpc.call("getblockcount") == 0


async def test_block_interval_mines_on_its_own(tmp_path) -> None:
    from tests.helpers.chain import open_mu_chain

    async with open_mu_chain(tmp_path / "node", block_interval=0.1) as chain:
        with trio.fail_after(30):
            while await chain.rpc.call("getblockcount") < 2:
                await trio.sleep(0.05)  # polling the subprocess, bounded by fail_after
        best = await chain.rpc.call("getblock", await chain.rpc.call("getblockhash", 1))
        out = await chain.rpc.call("gettxout", best["tx"][0], 0)
        assert out["scriptPubKey"]["type"] == "witness_v0_scripthash"  # P2WSH(OP_TRUE) by default


async def test_stop_shuts_down_cleanly(chain: MuChain) -> None:
    assert await chain.rpc.call("stop") == "mu chain stopping"
    with trio.fail_after(30):
        await chain.process.wait()
    assert chain.process.returncode == 0
    assert not chain.cookie_path.exists()


BAD_CALLS = [
    ("getblock", "00" * 32, "x"), ("getblock", 1), ("getblock", None), ("scantxoutset", "start", "x"),
    ("scantxoutset", "start", [123]), ("scantxoutset", "start", ["addr(zz)"]),
    ("scantxoutset", "start", ["raw(zz)"]), ("scantxoutset", 5), ("testmempoolaccept", ["zz"]),
    ("testmempoolaccept", ["00"]), ("testmempoolaccept", "x"), ("sendrawtransaction", "00" * 10, "abc"),
    ("sendrawtransaction", 5), ("generatetoaddress", -1, ADDRESS), ("getblockhash", True),
    ("getblockhash", 1.5), ("getrawmempool", "x"), ("getblockcount", 1), ("gettxout", "00" * 32, "0"),
    ("getrawtransaction", "00" * 32, True, "zz"), ("generatetoaddress", 10**6, ADDRESS),
]


async def test_malformed_parameters_get_bitcoind_errors_never_internal_ones(chain: MuChain) -> None:
    for method, *params in BAD_CALLS:
        with pytest.raises(RPCError) as err:
            await chain.rpc.call(method, *params)
        assert err.value.code not in (-32603, 0), (method, params, err.value)
    assert await chain.rpc.call("gettxout", "00" * 32, -1) is None
    assert await chain.rpc.call("getblockcount") == 0
