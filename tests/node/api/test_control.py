"""Control API over real loopback sockets (specs/network.md §6)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import trio

from node.api.control import (
    HEADER_TIMEOUT,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    PORT_FILE,
    TOKEN_FILE,
    ControlClient,
    ControlError,
    ControlServer,
    NodeNotRunning,
)

NODE_ID = bytes(range(20))


async def start(nursery: trio.Nursery, data_dir: Path) -> ControlServer:
    server = ControlServer(data_dir, NODE_ID)

    async def echo(body: dict) -> dict:
        return {"echo": body}

    async def boom(body: dict) -> dict:
        raise RuntimeError("handler bug")

    async def refuse(body: dict) -> dict:
        raise ControlError(409, "conflict", "already pinned")

    server.route("POST", "echo", echo)
    server.route("POST", "boom", boom)
    server.route("POST", "refuse", refuse)
    await nursery.start(server.serve)
    return server


async def raw(port: int, data: bytes) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        buf = bytearray()
        while chunk := await stream.receive_some(65536):
            buf += chunk
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def request(token: str, path: str = "/v1/status", method: str = "GET", body: bytes = b"", *, port: int) -> bytes:
    # HTTP/1.1 requires Host (RFC 9112 §3.2); the server also checks it names
    # itself.  Connection: close, or the kept-alive connection stays open.
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def test_status_and_files(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        server.add_status("store", lambda: {"chunks": 7})
        token_path = tmp_path / TOKEN_FILE
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
        assert len(token_path.read_text()) == 64
        assert int((tmp_path / PORT_FILE).read_text()) == server.port
        client = ControlClient.from_data_dir(tmp_path)
        reply = await client.call("GET", "status")
        assert reply["node_id"] == NODE_ID.hex()
        assert reply["store"] == {"chunks": 7}
        assert await client.call("POST", "echo", {"a": [1, 2]}) == {"echo": {"a": [1, 2]}}
        nursery.cancel_scope.cancel()
    assert not (tmp_path / PORT_FILE).exists()


async def test_bad_requests_get_errors_and_server_keeps_serving(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        token = (tmp_path / TOKEN_FILE).read_text()
        port = server.port
        host = f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n".encode()
        # Framing errors are answered by the HTTP server (h11) before any
        # route: their status, without a JSON body (code None here).
        cases = [
            (request("wrong" * 8, port=port), 401, "unauthorized"),
            (b"GET /v1/status HTTP/1.1\r\n" + host + b"\r\n", 401, "unauthorized"),
            (b"NONSENSE\r\n\r\n", 400, None),
            (request(token, "/v1/nope", port=port), 404, "not-found"),
            (request(token, "/v1/echo", "GET", port=port), 405, "method-not-allowed"),
            (request(token, "/v1/echo", "POST", b"{not json", port=port), 400, "bad-json"),
            (request(token, "/v1/echo", "POST", b"[1]", port=port), 400, "bad-json"),
            (request(token, "/v1/echo", "POST", b"x" * (MAX_BODY_BYTES + 1), port=port), 413, "body-too-large"),
            (b"GET /v1/status HTTP/1.1\r\n" + host + b"X: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n",
             431, "header-too-large"),
            (request(token, "/v1/boom", "POST", b"{}", port=port), 500, "internal"),
            (request(token, "/v1/refuse", "POST", b"{}", port=port), 409, "conflict"),
        ]
        for data, status, code in cases:
            got_status, body = await raw(port, data)
            assert got_status == status, data[:40]
            if code is not None:
                assert json.loads(body)["error"]["code"] == code
        client = ControlClient.from_data_dir(tmp_path)
        with pytest.raises(ControlError) as err:
            await client.call("POST", "refuse", {})
        assert (err.value.status, err.value.code, err.value.message) == (409, "conflict", "already pinned")
        assert (await client.call("GET", "status"))["node_id"] == NODE_ID.hex()
        nursery.cancel_scope.cancel()


async def test_slow_client_is_dropped(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /v1/status HTTP/1.1\r\n")
        start_time = trio.current_time()
        assert await stream.receive_some(100) == b""  # closed without a reply
        assert trio.current_time() - start_time >= HEADER_TIMEOUT
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_stream_events_in_order(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)

        async def count(body: dict, emit) -> dict:
            for i in range(body["n"]):
                await emit({"event": "progress", "i": i})
            if body.get("fail"):
                raise ControlError(404, "not-found", "no holder")
            return {"total": body["n"]}

        server.stream_route("count", count)
        client = ControlClient.from_data_dir(tmp_path)
        seen: list[int] = []
        result = await client.run_stream("count", {"n": 50}, lambda e: seen.append(e["i"]))
        assert result == {"total": 50} and seen == list(range(50))
        seen.clear()
        with pytest.raises(ControlError) as err:
            await client.run_stream("count", {"n": 3, "fail": True}, lambda e: seen.append(e["i"]))
        assert err.value.code == "not-found" and seen == [0, 1, 2]
        nursery.cancel_scope.cancel()


async def test_client_leaving_cancels_stream_handler(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        started = trio.Event()
        stopped = trio.Event()

        async def forever(body: dict, emit) -> dict:
            try:
                started.set()
                while True:
                    await emit({"event": "tick"})
                    await trio.sleep(0)  # yield between events
            finally:
                stopped.set()

        server.stream_route("forever", forever)
        client = ControlClient.from_data_dir(tmp_path)
        async with client.open_stream("forever", {}) as events:
            async for event in events:
                assert event == {"event": "tick"}
                break
        await started.wait()
        with trio.fail_after(10):
            await stopped.wait()
        assert (await client.call("GET", "status"))["node_id"] == NODE_ID.hex()
        nursery.cancel_scope.cancel()


async def test_no_node_running(tmp_path: Path) -> None:
    with pytest.raises(NodeNotRunning):
        ControlClient.from_data_dir(tmp_path)
    (tmp_path / PORT_FILE).write_text("1\n")
    (tmp_path / TOKEN_FILE).write_text("00")
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # a port nobody listens on
    with pytest.raises(NodeNotRunning):
        await ControlClient(port, "00").call("GET", "status")


async def test_mu_status_talks_to_the_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import main

    assert await trio.to_thread.run_sync(main, ["--data-dir", str(tmp_path), "status"]) == 1
    assert "no node is running" in capsys.readouterr().err
    async with trio.open_nursery() as nursery:
        server = await start(nursery, tmp_path)
        server.add_status("store", lambda: {"chunks": 3})
        assert await trio.to_thread.run_sync(main, ["--data-dir", str(tmp_path), "status", "--json"]) == 0
        reply = json.loads(capsys.readouterr().out)
        assert reply["node_id"] == NODE_ID.hex() and reply["store"] == {"chunks": 3}
        assert await trio.to_thread.run_sync(main, ["--data-dir", str(tmp_path), "status"]) == 0
        out = capsys.readouterr().out
        assert f"node_id: {NODE_ID.hex()}" in out and "  chunks: 3" in out
        nursery.cancel_scope.cancel()
