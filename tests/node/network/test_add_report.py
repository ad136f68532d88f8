"""``mu add`` through a node reports every replica that failed and exits 5 when a chunk is short (issue 20, item 3).

Real processes: ``mu chain``, a host ``mu node`` whose quota (one byte)
refuses every PUT, and the adding ``mu node`` that knows only that host.
Each chunk then reaches 0 of its 3 replicas: the command must name the
host and its refusal for every chunk, say that no node was left to ask,
print the link (the file is in the adding node's store) and exit
``EXIT_UNDER_REPLICATED``, not 0.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from node.api.control import ControlClient
from node.cli.exit_codes import EXIT_UNDER_REPLICATED
from tests.helpers.chain import open_mu_chain
from tests.helpers.node import REPO_ROOT, open_mu_node

JOIN_DEADLINE = 20.0
CHUNK_SIZE = 64 * 1024
CHUNKS = 3  # data chunks; the manifest adds one


async def _mu(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = await trio.run_process([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args],
                                    capture_stdout=True, capture_stderr=True, check=False, cwd=str(REPO_ROOT))
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.slow
async def test_add_names_each_failed_replica_with_its_reason_and_exits_under_replicated(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(CHUNKS * CHUNK_SIZE - 11))
    async with open_mu_chain(tmp_path / "chain") as chain:
        async with open_mu_node(tmp_path / "full-host", chain, ["--quota", "1"]) as host:
            bootstrap = ["--bootstrap", f"127.0.0.1:{host.extra['dht_port']}"]
            async with open_mu_node(tmp_path / "adder", chain, bootstrap) as adder:
                client = ControlClient.from_data_dir(adder.data_dir)
                with trio.fail_after(JOIN_DEADLINE):
                    while host.node_id.hex() not in {p["node_id"] for p in
                                                     (await client.call("GET", "peers"))["peers"]}:
                        await trio.sleep(0.05)  # polling the node's table, bounded by fail_after

                code, out, err = await _mu(adder.data_dir, "add", str(src), "--chunk-size", str(CHUNK_SIZE))
                assert code == EXIT_UNDER_REPLICATED, err
                assert out.startswith("mu:") and out.count("\n") == 1  # the link: the file is in the node's store
                refusals = [line for line in err.splitlines() if f"(node {host.node_id.hex()})" in line]
                assert len(refusals) == CHUNKS + 1  # every chunk, the manifest too
                assert all(line.split("): ", 1)[1].strip() for line in refusals)  # each with a reason
                assert err.count("no node left to ask") == CHUNKS + 1
                assert f"{CHUNKS + 1} of {CHUNKS + 1} chunks stored on fewer than 3 nodes" in err
                assert "\r" not in err and "\n\n" not in err and "Traceback" not in err

                code, out, err = await _mu(adder.data_dir, "add", str(src), "--chunk-size", str(CHUNK_SIZE), "--json")
                assert code == EXIT_UNDER_REPLICATED, err
                report = json.loads(out)
                assert report["replicas_wanted"] == 3 and report["replicas_confirmed"] == 0
                assert report["under_replicated"] == report["chunks"] == CHUNKS + 1
                host_failures = [f for f in report["failed_replicas"] if f["node_id"] == host.node_id.hex()]
                assert len(host_failures) == CHUNKS + 1 and all(f["reason"] for f in host_failures)
