"""The control client's blocking calls, which the ``mu`` command uses (specs/network.md §6 Control API).

Against a real ControlServer on loopback (in trio; the blocking calls run in a worker thread, as
they run in the command's process without an event loop), and against canned replies on a
loopback socket for the HTTP/1.1 framings and the malformed replies the server never sends.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

import node.api.client as client_module
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

        with pytest.raises(ControlError) as err:  # an event past MAX_EVENT_BYTES
            await trio.to_thread.run_sync(client.run_stream_blocking, "count", {"n": 1, "pad": 200 * 1024},
                                          lambda e: None)
        assert err.value.code == "bad-reply" and "exceeds" in err.value.message

        wrong_token = ControlClient(client.port, "00" * 32)
        with pytest.raises(ControlError) as err:
            await trio.to_thread.run_sync(wrong_token.call_blocking, "GET", "status")
        assert err.value.status == 401
        nursery.cancel_scope.cancel()


def test_no_node_answers(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NodeNotRunning):
        ControlClient(port, "00").call_blocking("GET", "status")
    with pytest.raises(NodeNotRunning):
        ControlClient(port, "00").run_stream_blocking("get", {}, lambda e: None)


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
PROGRESS = b'{"event": "progress"}\n'  # 0x16 bytes
DONE = b'{"event": "done", "result": {"ok": 1}}\n'  # 0x27 bytes


def serve_once(reply: bytes) -> tuple[int, threading.Thread, socket.socket]:
    """A one-shot server on loopback that answers any request with ``reply``, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=answer)
    thread.start()
    return listener.getsockname()[1], thread, listener


def stream_through(reply: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    port, thread, listener = serve_once(reply)
    seen: list[dict[str, Any]] = []
    try:
        return ControlClient(port, "00").run_stream_blocking("get", {}, seen.append), seen
    finally:
        thread.join()
        listener.close()


def test_the_framings_the_node_may_use() -> None:
    chunked = STREAM_HEAD + b"16\r\n" + PROGRESS + b"\r\n27;ext=1\r\n" + DONE + b"\r\n0\r\nTrailer: x\r\n\r\n"
    by_length = b"HTTP/1.1 200 OK\r\nContent-Length: 61\r\n\r\n" + PROGRESS + DONE
    to_the_close = b"HTTP/1.1 200 OK\r\n\r\n" + PROGRESS + DONE
    for reply in (chunked, by_length, to_the_close):
        assert stream_through(reply) == ({"ok": 1}, [{"event": "progress"}])


@pytest.mark.parametrize("reply", [
    STREAM_HEAD + b"16\r\n" + PROGRESS + b"\r\n8\r\n{\"event\"",  # then the node goes away
    STREAM_HEAD + b"16\r\n" + PROGRESS + b"\r\nzz\r\n",  # not a chunk size
    b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n" + PROGRESS,  # shorter than it said
    b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",  # a header line past http.client's bound
    b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 101 + b"\r\n",  # more header lines than http.client takes
    b"HTTP/1.1 200 OK\r\n\r\n" + PROGRESS,  # no result
])
def test_a_reply_that_is_not_well_formed_is_a_bad_reply(reply: bytes) -> None:
    with pytest.raises(ControlError) as err:
        stream_through(reply)
    assert err.value.code == "bad-reply"


def test_a_node_that_does_not_answer_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CLIENT_TIMEOUT", 0.2)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts (the kernel's backlog), never answers
        with pytest.raises(ControlError) as err:
            ControlClient(listener.getsockname()[1], "00").call_blocking("GET", "status")
    assert err.value.code == "bad-reply" and "timed out" in err.value.message
