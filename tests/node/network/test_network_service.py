"""mu add / mu pin / mu get through the control API of running nodes (specs/network.md §6).

Five in-process nodes on loopback (tests/helpers/network.py); three of them
serve their control API; the CLI code runs in worker threads, as a separate
`mu` process would, and talks to them over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from node.cli import EXIT_NOT_FOUND, main
from node.api.control import ControlClient, ControlServer
from node.cli.remote_backend import RemoteBackend
from node.cli.results import BackendError
from node.files.network import NetworkService
from protocol.chunks import Link
from tests.helpers.network import Node, network

MIB = 1 << 20


async def serve(nursery: trio.Nursery, node: Node) -> NetworkService:
    control = ControlServer(node.data_dir, node.identity.node_id)
    service = NetworkService(node.data_dir, node.store, node.dialer())
    service.register(control)
    await nursery.start(control.serve)
    return service


@pytest.mark.slow
async def test_add_pin_get_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "hello.bin"
    src.write_bytes(os.urandom(3 * MIB + 5))
    async with network(tmp_path, 5) as nodes:
        async with trio.open_nursery() as nursery:
            adder, pinner, getter = nodes[0], nodes[1], nodes[4]
            for node in (adder, pinner, getter):
                await serve(nursery, node)

            # `mu add` sees the running node and adds through it
            code = await trio.to_thread.run_sync(
                main, ["--data-dir", str(adder.data_dir), "add", str(src), "--json", "-q"])
            assert code == 0
            added = json.loads(capsys.readouterr().out)
            assert added["under_replicated"] == 0 and added["replicas_confirmed"] == 3 * added["chunks"]
            link = added["link"]

            code = await trio.to_thread.run_sync(
                main, ["--data-dir", str(pinner.data_dir), "pin", link, "--json"])
            assert code == 0
            pinned = json.loads(capsys.readouterr().out)
            assert pinned["size"] == src.stat().st_size
            assert pinned["announced_to"] > 0
            assert await trio.to_thread.run_sync(
                main, ["--data-dir", str(pinner.data_dir), "status", "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["network"]["pinned"] == 1
            # the pinner holds every chunk of the file, pinned, and its root durably (specs/network.md §7)
            root = Link.parse(link).root
            assert pinner.store.pinned_roots() == [root] and adder.store.pinned_roots() == [root]
            pinned_chunks = [m for m in pinner.store.entries_meta() if m.pinned]
            assert len(pinned_chunks) == added["chunks"]

            out = tmp_path / "out.bin"
            code = await trio.to_thread.run_sync(
                main, ["--data-dir", str(getter.data_dir), "get", link, "-o", str(out), "--json", "-q"])
            assert code == 0
            got = json.loads(capsys.readouterr().out)
            assert out.read_bytes() == src.read_bytes()
            assert got["size"] == src.stat().st_size and got["banned"] == []

            # a link for a file nobody has: not found, exit code 2, nothing written
            missing = str(Link(root=os.urandom(32), key=Link.parse(link).key))
            getter_backend = RemoteBackend(ControlClient.from_data_dir(getter.data_dir))
            with pytest.raises(BackendError) as not_found:
                await trio.to_thread.run_sync(
                    lambda: getter_backend.get(Link.parse(missing), tmp_path / "none", max_price=0))
            assert not_found.value.exit_code == EXIT_NOT_FOUND
            assert not (tmp_path / "none").exists()
            nursery.cancel_scope.cancel()
    # with the node gone (its port file left behind as after a crash), `mu add` works locally again
    (adder.data_dir / "control.port").write_text("1\n")
    assert await trio.to_thread.run_sync(
        main, ["--data-dir", str(adder.data_dir), "add", str(src), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == src.stat().st_size
