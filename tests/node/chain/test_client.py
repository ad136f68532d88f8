"""The async JSON-RPC client: timeouts, reconnects, cookie reload, clear errors."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from node.bitcoin.rpc import RPCClient, RPCTransportError, btc_to_sats, sats_to_btc
from tests.helpers.chain import open_mu_chain


def test_amount_conversion_is_exact() -> None:
    for sats in (0, 1, 294, 12_345_678, 2_100_000_000_000_000):
        assert btc_to_sats(sats_to_btc(sats)) == sats
    with pytest.raises(ValueError):
        btc_to_sats("0.000000001")


async def test_silent_server_times_out_with_a_clear_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted = trio.Event()

    async def swallow(stream: trio.SocketStream) -> None:
        accepted.set()
        await trio.sleep_forever()  # reads nothing, answers nothing

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, swallow, listeners)
        async with RPCClient(f"http://127.0.0.1:{port}/", user="u", password="p", timeout=0.5) as rpc:
            with pytest.raises(RPCTransportError, match="no answer"):
                await rpc.call("getblockcount")
        assert accepted.is_set()
        nursery.cancel_scope.cancel()


async def test_refused_connection_is_a_transport_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()  # nothing listens there now
    async with RPCClient(f"http://127.0.0.1:{port}/", user="u", password="p", timeout=5) as rpc:
        with pytest.raises(RPCTransportError, match="cannot talk"):
            await rpc.call("getblockcount")


async def test_client_survives_a_server_restart_with_a_new_cookie(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    async with open_mu_chain(data_dir) as chain:
        port = urlsplit(chain.url).port
        old_cookie = chain.cookie_path.read_text()
        client = RPCClient(chain.url, cookie_path=chain.cookie_path, timeout=10)
        await client.call("generatetoaddress", 2, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
        assert await client.call("getblockcount") == 2
    # SIGTERM (on leaving the block) is a clean exit: status 0, cookie removed.
    assert chain.process.returncode == 0 and not chain.cookie_path.exists()
    # Same port again (the OS gave it to us and it is free now): the kept-alive
    # connection is dead and the cookie is new; the same client must cope.
    async with open_mu_chain(data_dir, extra_args=["--rpc-port", str(port)]) as chain:
        assert chain.cookie_path.read_text() != old_cookie
        async with client:
            assert await client.call("getblockcount") == 2


async def test_a_call_cancelled_half_way_never_hands_its_reply_to_the_next(tmp_path: Path) -> None:
    # A cancel scope may fire after the request went out and before its reply
    # was read; the next call on the kept-alive connection must get its own
    # reply (or a clear error), never the cancelled call's.
    async with open_mu_chain(tmp_path) as chain:
        async with RPCClient(chain.url, cookie_path=chain.cookie_path) as rpc:
            height = await rpc.call("getblockcount")
            for attempt in range(200):
                with trio.move_on_after(0.0002 * (attempt % 10)):
                    await rpc.call("getblockcount")
                try:
                    mempool = await rpc.call("getrawmempool")
                except RPCTransportError:
                    continue
                assert mempool == [], f"attempt {attempt}: got {mempool!r} for getrawmempool"
            assert await rpc.call("getblockcount") == height
