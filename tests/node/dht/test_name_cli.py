"""``mu name create / publish / resolve`` (issue 16 item 2), through a short-lived DHT node
and through a running ``mu node``'s control API.  Every DHT node is real, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import secrets
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.api.control import ControlClient, ControlError
from node.dht import DhtNode, open_dht
from protocol.identity import Identity
from protocol.kademlia import mutable_key, sign_mutable
from tests.helpers.chain import open_mu_chain
from tests.helpers.node import REPO_ROOT, open_mu_node


async def mu(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = await trio.run_process([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args],
                                    capture_stdout=True, capture_stderr=True, check=False, cwd=str(REPO_ROOT))
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@asynccontextmanager
async def open_network(n: int) -> AsyncIterator[list[DhtNode]]:
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(open_dht(Identity(secrets.token_bytes(32)), loopback_devnet=True))
                 for _ in range(n)]
        for node in nodes[1:]:
            await node.bootstrap([("127.0.0.1", nodes[0].port)])
        yield nodes


async def test_create_publish_resolve_through_a_short_lived_dht_node(tmp_path: Path) -> None:
    data_dir, keyfile = tmp_path / "cli", tmp_path / "folder.key"
    code, out, err = await mu(data_dir, "name", "create", str(keyfile))
    assert code == 0, err
    name = out.strip()
    assert len(bytes.fromhex(name)) == 32
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert (await mu(data_dir, "name", "create", str(keyfile)))[0] == 1  # never overwrites a key
    # No running node and no peers known: a clear failure.
    code, _, err = await mu(data_dir, "name", "resolve", name)
    assert code == 1 and "--bootstrap" in err

    async with open_network(6) as nodes:
        join = ["--bootstrap", f"127.0.0.1:{nodes[0].port}", "--loopback-devnet"]
        code, out, err = await mu(data_dir, "name", "publish", str(keyfile), "mu://first", *join, "--json")
        assert code == 0, err
        first = json.loads(out)
        assert first["seq"] == 0 and first["stored"] == 6 and bytes.fromhex(first["value"]) == b"mu://first"
        stale_copy = keyfile.read_bytes()

        code, out, err = await mu(data_dir, "name", "publish", str(keyfile), "mu://second", *join)
        assert code == 0, err
        code, out, err = await mu(data_dir, "name", "resolve", name, *join)
        assert code == 0, err
        assert out.splitlines() == ["seq 1", "mu://second"]
        assert json.loads(keyfile.read_text())["seq"] == 1

        # A key file that missed a publish (another machine's copy) still goes past the network's newest.
        keyfile.write_bytes(stale_copy)
        code, out, err = await mu(data_dir, "name", "publish", str(keyfile), "mu://third", *join, "--json")
        assert code == 0, err
        assert json.loads(out)["seq"] == 2
        assert (await nodes[4].resolve_record(bytes.fromhex(name))) is not None
        assert (await nodes[4].resolve_record(bytes.fromhex(name))).value == b"mu://third"  # type: ignore[union-attr]

        unknown = Identity(secrets.token_bytes(32)).public_key.hex()
        code, _, err = await mu(data_dir, "name", "resolve", unknown, *join)
        assert code == 2, err
        code, _, err = await mu(data_dir, "name", "publish", str(keyfile), "x" * 1001, *join)
        assert code == 1 and "1000" in err
        (tmp_path / "junk.key").write_text("{}")
        code, _, err = await mu(data_dir, "name", "publish", str(tmp_path / "junk.key"), "v", *join)
        assert code == 1 and "not a mu name key file" in err


@pytest.mark.slow
async def test_publish_and_resolve_through_the_running_node(tmp_path: Path) -> None:
    data_dir, keyfile = tmp_path / "node", tmp_path / "name.key"
    async with open_mu_chain(tmp_path / "chain") as chain, open_network(4) as nodes:
        args = ["--bootstrap", f"127.0.0.1:{nodes[0].port}"]
        async with open_mu_node(data_dir, chain, args) as node:
            dht_port = int(node.extra["dht_port"])  # type: ignore[call-overload]
            # The node has joined once it answers lookups with the others in its table.
            await nodes[1].bootstrap([("127.0.0.1", dht_port)])
            assert (await mu(data_dir, "name", "create", str(keyfile)))[0] == 0
            name = json.loads(keyfile.read_text())["public_key"]
            code, out, err = await mu(data_dir, "name", "publish", str(keyfile), "mu://via-node", "--json")
            assert code == 0, err
            assert json.loads(out)["stored"] >= 4
            # Held by the network, and by the node, which will republish it.
            record = await nodes[3].resolve_record(bytes.fromhex(name))
            assert record is not None and record.value == b"mu://via-node" and record.seq == 0
            code, out, err = await mu(data_dir, "name", "resolve", name)
            assert code == 0 and out.splitlines() == ["seq 0", "mu://via-node"], err

            # The route refuses a forged record; a record signed elsewhere is carried as is.
            client = ControlClient.from_data_dir(data_dir)
            forged = bytearray(sign_mutable(secrets.token_bytes(32), 5, b"v").serialize())
            forged[-1] ^= 1
            with pytest.raises(ControlError) as refused:
                await client.call("POST", "name/publish", {"record": bytes(forged).hex()})
            assert refused.value.code == "bad-argument" and "bad_signature" in refused.value.message
            other = sign_mutable(secrets.token_bytes(32), 7, b"signed elsewhere")
            reply = await client.call("POST", "name/publish", {"record": other.serialize().hex()})
            assert reply["seq"] == 7 and reply["key"] == mutable_key(other.public_key).hex()
            with pytest.raises(ControlError) as missing:
                await client.call("POST", "name/resolve", {"public_key": "ab" * 32})
            assert missing.value.code == "not-found"
