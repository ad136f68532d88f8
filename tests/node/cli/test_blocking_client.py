"""The control client's blocking calls, which the ``mu`` command uses, against a real ControlServer on loopback.

The server runs in trio; the client's blocking calls run in a worker thread, as they run in the
command's process without an event loop (specs/network.md §6 Control API).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from node.api.control import ControlClient, ControlError, ControlServer, Emit, NodeNotRunning

NODE_ID = bytes(range(20))


async def start(nursery: trio.Nursery, data_dir: Path) -> ControlServer:
    server = ControlServer(data_dir, NODE_ID)

    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return {"echo": body}

    async def refuse(body: dict[str, Any]) -> dict[str, Any]:
        raise ControlError(409, "conflict", "already pinned")

    async def count(body: dict[str, Any], emit: Emit) -> dict[str, Any]:
        for i in range(body["n"]):
            await emit({"event": "progress", "i": i, "pad": "x" * body.get("pad", 0)})
        if body.get("fail"):
            raise ControlError(404, "not-found", "no holder")
        return {"total": body["n"]}

    server.route("POST", "echo", echo)
    server.route("POST", "refuse", refuse)
    server.stream_route("count", count)
    await nursery.start(server.serve)
    return server


async def test_calls_and_streams(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        await start(nursery, tmp_path)
        client = ControlClient.from_data_dir(tmp_path)
        reply = await trio.to_thread.run_sync(client.call_blocking, "GET", "status")
        assert reply["node_id"] == NODE_ID.hex()
        assert await trio.to_thread.run_sync(client.call_blocking, "POST", "echo", {"a": [1, 2]}) == {
            "echo": {"a": [1, 2]}}

        seen: list[int] = []
        # events of 16 KiB each: lines that span the client's reads
        result = await trio.to_thread.run_sync(
            client.run_stream_blocking, "count", {"n": 40, "pad": 16 * 1024}, lambda e: seen.append(e["i"]))
        assert result == {"total": 40} and seen == list(range(40))
        nursery.cancel_scope.cancel()


async def test_errors_are_control_errors(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        await start(nursery, tmp_path)
        client = ControlClient.from_data_dir(tmp_path)
        with pytest.raises(ControlError) as err:
            await trio.to_thread.run_sync(client.call_blocking, "POST", "refuse", {})
        assert (err.value.status, err.value.code, err.value.message) == (409, "conflict", "already pinned")

        seen: list[int] = []
        with pytest.raises(ControlError) as err:
            await trio.to_thread.run_sync(
                client.run_stream_blocking, "count", {"n": 3, "fail": True}, lambda e: seen.append(e["i"]))
        assert err.value.code == "not-found" and seen == [0, 1, 2]

        with pytest.raises(ControlError) as err:  # a stream's route refused before it began: the reply's error
            await trio.to_thread.run_sync(client.run_stream_blocking, "nope", {}, lambda e: None)
        assert (err.value.status, err.value.code) == (404, "not-found")

        wrong_token = ControlClient(client.port, "00" * 32)
        with pytest.raises(ControlError) as err:
            await trio.to_thread.run_sync(wrong_token.call_blocking, "GET", "status")
        assert err.value.status == 401
        nursery.cancel_scope.cancel()


async def test_an_event_past_the_bound_breaks_the_stream(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        await start(nursery, tmp_path)
        client = ControlClient.from_data_dir(tmp_path)
        with pytest.raises(ControlError) as err:
            await trio.to_thread.run_sync(client.run_stream_blocking, "count", {"n": 1, "pad": 200 * 1024},
                                          lambda e: None)
        assert err.value.code == "bad-reply" and "exceeds" in err.value.message
        nursery.cancel_scope.cancel()


def test_no_node_answers(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NodeNotRunning):
        ControlClient(port, "00").call_blocking("GET", "status")
    with pytest.raises(NodeNotRunning):
        ControlClient(port, "00").run_stream_blocking("get", {}, lambda e: None)


def test_a_reply_that_breaks_off_is_a_bad_reply(tmp_path: Path) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_half_a_stream() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"16\r\n{\"event\": \"progress\"}\n\r\n8\r\n{\"event\"")  # then the node goes away

    server = threading.Thread(target=serve_half_a_stream)
    server.start()
    seen: list[dict[str, Any]] = []
    try:
        with pytest.raises(ControlError) as err:
            ControlClient(port, "00").run_stream_blocking("get", {}, seen.append)
    finally:
        server.join()
        listener.close()
    assert err.value.code == "bad-reply" and seen == [{"event": "progress"}]
