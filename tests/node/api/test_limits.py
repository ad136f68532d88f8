"""Slow clients cannot starve real ones, and node/ holds no HTTP codec of its own (issue 18)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import trio

from node.api.control import HEADER_TIMEOUT, ControlServer
from node.cli import main

NODE_ID = bytes(range(20))
SLOW_CONNECTIONS = 500
REPO = Path(__file__).resolve().parents[3]


async def test_mu_status_answers_within_a_second_beside_500_slow_connections(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with trio.open_nursery() as nursery:
        server = ControlServer(tmp_path, NODE_ID)
        await nursery.start(server.serve)
        slow = []
        for _ in range(SLOW_CONNECTIONS):  # each sends half a request line and then nothing
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(b"GET /v1/status HT")
            slow.append(stream)
        with trio.fail_after(1):
            code = await trio.to_thread.run_sync(main, ["--data-dir", str(tmp_path), "status", "--json"])
        assert code == 0 and json.loads(capsys.readouterr().out)["node_id"] == NODE_ID.hex()
        # The slow ones are still held open, unanswered, until their header time runs out.
        with trio.move_on_after(0.05):
            assert await slow[0].receive_some(1) == b"", "a slow client got a reply"
        for stream in slow:
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_unfinished_headers_are_cut_off(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        server = ControlServer(tmp_path, NODE_ID)
        await nursery.start(server.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        start = trio.current_time()
        request = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        try:
            for byte in request:  # one byte a second, the headers never end: slowloris
                await stream.send_all(bytes([byte]))
                await trio.sleep(1)
        except trio.BrokenResourceError:
            pass  # the server hung up
        try:
            assert await stream.receive_some(100) == b""  # closed without a reply
        except trio.BrokenResourceError:
            pass  # reset: closed without a reply as well
        assert HEADER_TIMEOUT <= trio.current_time() - start < HEADER_TIMEOUT + 2
        await stream.aclose()
        nursery.cancel_scope.cancel()


# What writing HTTP by hand looks like in a string literal: CRLF line ends,
# status lines, request lines, length and framing headers being formatted.
HAND_WRITTEN_HTTP = re.compile(
    r"\r\n|^HTTP/1\.[01] |\sHTTP/1\.[01]$|(Content-Length|Transfer-Encoding|Connection): ", re.I)


def _string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant and f-string part in the module's code (comments are not code)."""
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
            for _ in [0] if HAND_WRITTEN_HTTP.search(node.value if isinstance(node.value, str)
                                                      else node.value.decode("latin-1"))]


def test_node_has_no_hand_written_http() -> None:
    offenders = [f"{path.relative_to(REPO)}:{line}: {value!r}"
                 for path in sorted((REPO / "node").rglob("*.py"))
                 for line, value in _string_literals(path)]
    assert offenders == []


def test_the_check_finds_hand_written_http(tmp_path: Path) -> None:
    codec = tmp_path / "codec.py"
    codec.write_text('head = f"HTTP/1.1 {status} OK\\r\\nContent-Length: {n}\\r\\n\\r\\n"\n')
    assert len(_string_literals(codec)) == 3  # the f-string's constant parts
    old_server = tmp_path / "old_server.py"  # the control API's codec before issue 18, in short
    old_server.write_text('lines = head.decode("latin-1").split("\\r\\n")\n'
                          'request = f"{method} {path} HTTP/1.1"\n')
    assert len(_string_literals(old_server)) == 2
