"""``mu peers`` and ``mu earnings`` go through the running node, and fall back to the data dir.

A real ``mu node`` subprocess (against ``mu chain``) learns a DHT peer after
it started; the saved table file does not hold that peer yet (it is written
every SAVE_INTERVAL and at exit), so only the node's live table can list it.
A payer then buys a few chunks from it, and ``mu earnings`` reports them.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import trio

from node.api.control import ControlClient
from node.dht import TABLE_FILE, load_table, open_dht
from protocol.identity import Identity
from protocol.payments import chunk_price
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import open_fetcher, seed_chunks
from tests.helpers.node import REPO_ROOT, open_mu_node

LEARN_DEADLINE = 20.0
CHUNK = 16 * 1024
PRICE = 4_096  # sats per MiB: 64 sats per chunk
SOLD = 3


async def _mu(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = await trio.run_process([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args],
                                    capture_stdout=True, capture_stderr=True, check=False, cwd=str(REPO_ROOT))
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_peers_and_earnings_from_the_running_node_then_from_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "host"
    addresses = seed_chunks(data_dir, SOLD, CHUNK)
    async with open_mu_chain(tmp_path / "chain") as chain:
        args = ["--price-get", str(PRICE), "--free-allowance", "0"]
        async with open_mu_node(data_dir, chain, args) as host:
            dht_port = int(host.extra["dht_port"])  # type: ignore[call-overload]
            async with open_dht(Identity(secrets.token_bytes(32))) as newcomer:
                await newcomer.bootstrap([("127.0.0.1", dht_port)])
                # The node adds the newcomer to its table when it handles the newcomer's request.
                client = ControlClient.from_data_dir(data_dir)
                with trio.fail_after(LEARN_DEADLINE):
                    while newcomer.node_id.hex() not in {p["node_id"] for p in
                                                         (await client.call("GET", "peers"))["peers"]}:
                        await trio.sleep(0.05)  # polling the node's table, bounded by fail_after
                # Not in the saved file: only the live table knows it.
                assert newcomer.node_id not in {c.node_id for c in load_table(data_dir, host.node_id)}

                code, out, err = await _mu(data_dir, "peers", "--json")
                assert code == 0, err
                report = json.loads(out)
                assert report["node_id"] == host.node_id.hex()
                assert report["live"] is True
                row = next(p for p in report["peers"] if p["node_id"] == newcomer.node_id.hex())
                assert row["host"] == "127.0.0.1" and row["port"] == newcomer.port
                assert row["mu"] is False  # a bare Kademlia node with no mu contact record
                assert 0 <= row["seen_ago_s"] < LEARN_DEADLINE + 60

                code, out, err = await _mu(data_dir, "peers")
                assert code == 0, err
                assert newcomer.node_id.hex() in out and "seen" in out

            code, out, err = await _mu(data_dir, "earnings", "--json")
            assert code == 0, err
            assert json.loads(out)["earned"] == 0

            async with open_fetcher(tmp_path / "payer", chain) as fetcher:
                link = await fetcher.link(host)
                await fetcher.open_channel(link, capacity=100_000)
                for address in addresses:
                    await fetcher.payer.get(link, address, expected_size=CHUNK)
                payer_id = fetcher.transport.identity.node_id.hex()

            code, out, err = await _mu(data_dir, "earnings", "--json")
            assert code == 0, err
            live_earnings = json.loads(out)
            assert live_earnings == await client.call("GET", "earnings")
            earned = SOLD * chunk_price(CHUNK, PRICE)
            assert live_earnings["earned"] == earned and live_earnings["spent"] == 0
            assert live_earnings["per_peer"][payer_id]["earned"] == earned
            code, out, err = await _mu(data_dir, "earnings")
            assert code == 0, err
            assert f"earned:  {earned} sats" in out

        # No node runs now: the same commands read the saved table and the ledger.
        assert not (data_dir / "control.port").exists()
        assert (data_dir / TABLE_FILE).exists()
        code, out, err = await _mu(data_dir, "peers", "--json")
        assert code == 0, err
        saved = json.loads(out)
        assert saved["live"] is False and saved["node_id"] == host.node_id.hex()
        row = next(p for p in saved["peers"] if p["node_id"] == newcomer.node_id.hex())  # saved at exit
        assert set(row) == {"node_id", "host", "port", "mu", "seen_ago_s"} and row["seen_ago_s"] is None

        code, out, err = await _mu(data_dir, "earnings", "--json")
        assert code == 0, err
        assert json.loads(out) == live_earnings
