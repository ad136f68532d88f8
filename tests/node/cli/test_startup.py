"""``mu COMMAND`` imports what COMMAND needs, no more: the command's start-up (issue 22).

``mu get`` through a running node is the control client and the parser; the node's own code
(files, exchange, DHT, store), trio and httpx stay out of the command's process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from node.api.control import ControlServer, Emit
from node.cli import COMMAND_GROUPS, build_parser, command_of
from protocol.chunks import Link

REPO = Path(__file__).resolve().parents[3]
LINK = str(Link(root=bytes(range(32)), key=bytes(range(32, 64))))
# Modules a command served by a running node must not import (each is a package or a module's full name).
HEAVY = ("trio", "httpx", "starlette", "hypercorn", "node.files", "node.exchange", "node.dht", "node.store",
         "node.transport", "node.ledger", "node.folders.local", "node.cli.local_backend", "protocol.identity",
         # The codecs: a link and the chunk sizes come without them (protocol.chunks loads lazily).
         "cryptography", "pyfastcdc", "msgpack", "protocol.chunks._crypto", "protocol.chunks._decoder")
LOADED_HEAVY = f"sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {HEAVY!r}))"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def test_each_group_registers_the_commands_it_is_listed_with() -> None:
    every = _commands(build_parser())
    assert every == [command for _, commands in COMMAND_GROUPS for command in commands]
    for _, commands in COMMAND_GROUPS:
        for command in commands:
            assert _commands(build_parser(command)) == list(commands)


@pytest.mark.parametrize(("argv", "command"), [
    (["get", LINK, "-o", "x"], "get"),
    (["--data-dir", "get", "status"], "status"),  # a data dir named like a command
    (["--data-dir=/tmp/d", "earnings"], "earnings"),
    (["--data", "/tmp/d", "add", "f"], "add"),  # argparse takes a prefix of --data-dir
    (["-h", "get"], None),  # the whole program's help
    (["--bogus", "get"], None),
    (["no-such-command"], None),
    (["--data-dir", "/tmp/d"], None),
    ([], None),
])
def test_command_of(argv: list[str], command: str | None) -> None:
    assert command_of(argv) == command


@pytest.mark.parametrize("argv", [["get", LINK, "-o", "out.bin"], ["add", "file"], ["status"], ["pin", LINK],
                                  ["peers"], ["earnings"]])
def test_parsing_a_command_a_node_serves_imports_none_of_the_node(argv: list[str]) -> None:
    done = run_python(
        "import sys; import node.cli as cli\n"
        f"args = cli.build_parser(cli.command_of({argv!r})).parse_args({argv!r})\n"
        f"assert args.command == {argv[0]!r}, args\n"
        f"print({LOADED_HEAVY})")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_mu_get_through_a_node_imports_none_of_the_node(tmp_path: Path) -> None:
    """The whole remote path: status, then the get stream with its progress, against a real control server."""
    server = ControlServer(tmp_path, bytes(20))
    asked: list[dict[str, Any]] = []

    async def get(body: dict[str, Any], emit: Emit) -> dict[str, Any]:
        asked.append(body)
        await emit({"event": "progress", "chunks_done": 1, "local_chunks": 0, "bytes_fetched": 5, "sats_spent": 2,
                    "rate": 10})
        return {"size": 5, "path": body["output"], "chunks_fetched": 1, "local_chunks": 0, "bytes_fetched": 5,
                "sats_spent": 2, "sats_lost": 0, "seconds": 0.5, "rate": 10, "banned": []}

    server.stream_route("get", get)
    out = tmp_path / "out.bin"
    argv = ["--data-dir", str(tmp_path), "get", LINK, "-o", str(out), "--json"]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        done = await trio.to_thread.run_sync(run_python, (
            "import json, sys; from node.cli import main\n"
            f"code = main({argv!r})\n"
            f"print(json.dumps({{'code': code, 'heavy': {LOADED_HEAVY}}}))"))
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr
    result, outcome = (json.loads(line) for line in done.stdout.splitlines())
    assert outcome == {"code": 0, "heavy": []}
    assert result["sats_spent"] == 2 and result["path"] == str(out)
    assert asked == [{"link": LINK, "output": str(out)}]
