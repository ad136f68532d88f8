"""One process per data dir, and a taken port, with real `mu node` / `mu chain` processes.

A second `mu node` or `mu chain` on a data dir in use exits 1 with one line
naming the running PID and leaves the first one's files and service alone;
a SIGKILLed node's lock does not block the next start; a taken port is one
line naming it, exit 1 (issue 20, item 4; node/runtime/lock.py).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from protocol.bitcoin.bech32 import encode_address
from tests.helpers.chain import REPO_ROOT, open_mu_chain
from tests.helpers.node import open_mu_node

pytestmark = pytest.mark.slow

# Files the running process published; a refused second one must leave them as they are.
NODE_FILES = ("node.json", "control.port", "control.token")
CHAIN_FILES = ("chain/rpc.port", "chain/.cookie")
BURN_SCRIPT = bytes.fromhex("0014") + bytes(20)  # P2WPKH to a key nobody has


async def _mu(data_dir: Path, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with trio.fail_after(60):
        result = await trio.run_process([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args],
                                        capture_stdout=True, capture_stderr=True, check=False,
                                        cwd=str(REPO_ROOT), env=env)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def _snapshot(data_dir: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    return {name: (data_dir / name).read_bytes() for name in names}


def _assert_one_line(err: str, *, naming: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and naming in lines[0], err


@contextmanager
def _taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 some other socket listens on for the ``with`` body."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def test_second_node_on_a_data_dir_in_use_exits_1_naming_the_pid(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain") as chain, open_mu_node(tmp_path / "host", chain) as host:
        assert host.process is not None
        before = _snapshot(host.data_dir, NODE_FILES)

        code, _, err = await _mu(host.data_dir, "node", "--listen", "127.0.0.1:0", "--chain-rpc", chain.url,
                                 "--chain-cookie", str(chain.cookie_path))

        assert code == 1
        _assert_one_line(err, naming=str(host.process.pid))
        assert _snapshot(host.data_dir, NODE_FILES) == before
        # The first node is fully usable: the CLI still finds it through its control API.
        code, out, err = await _mu(host.data_dir, "status", "--json")
        assert code == 0, err
        assert json.loads(out)["node_id"] == host.node_id.hex()
        assert (host.data_dir / "node.lock").read_text().strip() == str(host.process.pid)


async def test_second_chain_on_a_data_dir_in_use_exits_1_naming_the_pid(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain") as chain:
        before = _snapshot(chain.data_dir, CHAIN_FILES)
        height = await chain.rpc.call("getblockcount")

        code, _, err = await _mu(chain.data_dir, "chain", "--rpc-port", "0")

        assert code == 1
        _assert_one_line(err, naming=str(chain.process.pid))
        assert _snapshot(chain.data_dir, CHAIN_FILES) == before
        # Its RPC still answers with the same cookie, and it still mines.
        await chain.rpc.call("generatetoaddress", 1, encode_address(BURN_SCRIPT, "regtest"))
        assert await chain.rpc.call("getblockcount") == height + 1
        assert (chain.data_dir / "chain" / "chain.lock").read_text().strip() == str(chain.process.pid)


async def test_a_killed_nodes_lock_does_not_block_a_new_start(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain") as chain, open_mu_node(tmp_path / "host", chain) as host:
        assert host.process is not None
        killed = host.process.pid
        await host.kill()
        assert (host.data_dir / "node.lock").read_text().strip() == str(killed)

        await host.restart()  # waits for node.json with the new PID

        assert host.process.pid != killed
        assert (host.data_dir / "node.lock").read_text().strip() == str(host.process.pid)
        code, out, err = await _mu(host.data_dir, "status", "--json")
        assert code == 0, err
        assert json.loads(out)["node_id"] == host.node_id.hex()


async def test_node_on_a_taken_port_exits_1_naming_it(tmp_path: Path) -> None:
    async with open_mu_chain(tmp_path / "chain") as chain:
        with _taken_port() as port:
            code, _, err = await _mu(tmp_path / "host", "node", "--listen", f"127.0.0.1:{port}",
                                     "--chain-rpc", chain.url, "--chain-cookie", str(chain.cookie_path))
    assert code == 1
    _assert_one_line(err, naming=str(port))


async def test_chain_on_a_taken_port_exits_1_naming_it(tmp_path: Path) -> None:
    with _taken_port() as port:
        code, _, err = await _mu(tmp_path, "chain", "--rpc-port", str(port))
    assert code == 1
    _assert_one_line(err, naming=str(port))
    # It published nothing a client could mistake for a running chain.
    assert not (tmp_path / "chain" / "rpc.port").exists()
    assert not (tmp_path / "chain" / ".cookie").exists()
