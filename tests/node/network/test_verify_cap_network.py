"""`mu pin ROOT` and `mu get ROOT --raw` with a bare root, on real loopback nodes (specs/chunks.md §6.5).

Five in-process nodes (tests/helpers/network.py) serve their control API;
the CLI runs in worker threads and talks to them over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from node.cli import EXIT_NOT_FOUND, EXIT_FAILURE, main
from protocol.chunks import Link
from tests.helpers.network import network
from tests.node.network.test_network_service import serve

MIB = 1 << 20


def cli(*argv: str) -> int:
    return main(list(argv))


@pytest.mark.slow
async def test_bare_root_pin_hosts_and_raw_get_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "secret.bin"
    src.write_bytes(os.urandom(2 * MIB + 7))
    async with network(tmp_path, 5) as nodes:
        async with trio.open_nursery() as nursery:
            adder, pinner, raw_getter, reader = nodes[0], nodes[1], nodes[2], nodes[4]
            for node in (adder, pinner, raw_getter, reader):
                await serve(nursery, node)
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(adder.data_dir), "add", str(src), "--json", "-q",
                "--chunk-size", str(MIB)) == 0  # fixed 1 MiB chunks: three data chunks below
            added = json.loads(capsys.readouterr().out)
            link = Link.parse(added["link"])
            root = link.root_text
            file_chunks = set(adder.store.list())
            assert len(file_chunks) == added["chunks"]

            # `mu pin ROOT`: no key, yet the node fetches, verifies, stores and announces
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(pinner.data_dir), "pin", root, "--json") == 0
            pinned = json.loads(capsys.readouterr().out)
            assert pinned["raw"] is True and pinned["chunks"] == len(file_chunks)
            assert pinned["data_chunks"] == 3 and pinned["announced_to"] > 0
            assert file_chunks <= set(pinner.store.list())
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(pinner.data_dir), "status", "--json") == 0
            assert json.loads(capsys.readouterr().out)["network"]["pinned"] == 1

            # `mu get ROOT --raw`: verified ciphertext into the store, no file written
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(raw_getter.data_dir), "get", root, "--raw", "--json", "-q") == 0
            got = json.loads(capsys.readouterr().out)
            assert got["chunks"] == len(file_chunks) and got["path"] is None
            assert got["size"] == sum(len(adder.store.get(a)) for a in file_chunks)
            assert file_chunks <= set(raw_getter.store.list())
            # decrypting still needs the key, and -o means nothing with --raw
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(raw_getter.data_dir), "get", root, "-o", str(tmp_path / "x")) == EXIT_FAILURE
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(raw_getter.data_dir), "get", root, "--raw", "-o", str(tmp_path / "x")
            ) == EXIT_FAILURE
            assert not (tmp_path / "x").exists()

            # every other copy gone: the pinner alone serves the file to a key holder
            for node in nodes:
                if node is not pinner:
                    for address in file_chunks:
                        node.store.delete(address)
            out = tmp_path / "out.bin"
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(reader.data_dir), "get", str(link), "-o", str(out), "--json", "-q") == 0
            assert out.read_bytes() == src.read_bytes()

            # a root nobody has: not found
            missing = Link(root=os.urandom(32)).root_text
            assert await trio.to_thread.run_sync(
                cli, "--data-dir", str(raw_getter.data_dir), "get", missing, "--raw", "-q") == EXIT_NOT_FOUND
            nursery.cancel_scope.cancel()
    capsys.readouterr()
    # no node running: `mu get ROOT --raw` walks and verifies the local store (the pinner kept it all)
    assert cli("--data-dir", str(pinner.data_dir), "get", root, "--raw", "--json") == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == len(file_chunks)
    victim = next(iter(file_chunks))
    pinner.store.delete(victim)
    assert cli("--data-dir", str(pinner.data_dir), "get", root, "--raw") == EXIT_NOT_FOUND
    assert victim.hex() in capsys.readouterr().err
