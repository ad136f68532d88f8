"""The web app's files book, settings, DHT size estimate and earnings (node/web/_book.py, node/web/_reports.py).

The Earnings page reads ``GET /v1/earnings`` (node/files/network.py), the
report ``mu earnings --json`` prints; its service balances are checked here
from a real ledger, over a real control server on loopback.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

import pytest
import trio

from node.api.control import ControlClient, ControlServer
from node.cli import main
from node.dht import open_dht
from node.files.network import register_report_routes
from node.ledger import LEDGER_FILE, ChannelRecord, Ledger
from node.runtime.settings import CONFIG_FILE, read_config_file
from node.files.speeds import MAX_HOSTS_TRACKED, SPEED_WEIGHT, HostSpeeds
from node.web._book import BOOK_FILE, BookEntry, FilesBook
from node.web._reports import dht_size_estimate, read_settings, save_settings, with_speeds
from protocol.chunks import Link
from protocol.identity import Identity
from protocol.kademlia.ids import K
from protocol.payments.balance import PeerBalance

PAYER, RECIPROCAL = "cd" * 20, "ef" * 20


def entry(n: int) -> BookEntry:
    return BookEntry(link=str(Link(bytes([n]) * 32, bytes([n + 1]) * 32)), name=f"f{n}.txt", size=n,
                     media_type="text/plain", added_at=1_700_000_000 + n)


def test_the_book_survives_a_restart_and_keeps_its_keys_private(tmp_path: Path) -> None:
    book = FilesBook(tmp_path)
    book.record(entry(1))
    book.record(entry(2))
    book.forget(entry(1).root)
    again = FilesBook(tmp_path)
    assert again.get(entry(1).root) is None and again.get(entry(2).root) == entry(2)
    assert stat.S_IMODE(os.stat(tmp_path / BOOK_FILE).st_mode) == 0o600


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"files": [{"link": "mu:nonsense"}, 7]}'])
def test_a_damaged_book_starts_empty(tmp_path: Path, content: str) -> None:
    (tmp_path / BOOK_FILE).write_text(content)
    book = FilesBook(tmp_path)
    assert book.get(entry(1).root) is None
    book.record(entry(1))
    assert FilesBook(tmp_path).get(entry(1).root) == entry(1)


def test_settings_are_written_to_config_toml_keeping_other_keys(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text('chain_rpc = "http://127.0.0.1:1/"\nprice_get = 5\n')
    shown = save_settings(tmp_path, {"price_put": 700, "quota": 1 << 30})
    assert shown["settings"]["price_get"] == 5 and shown["settings"]["price_put"] == 700
    assert read_config_file(tmp_path / CONFIG_FILE) == {"chain_rpc": "http://127.0.0.1:1/", "price_get": 5,
                                                        "price_put": 700, "quota": 1 << 30}
    assert read_settings(tmp_path)["settings"]["quota"] == 1 << 30


@pytest.mark.parametrize(("changes", "message"), [
    ({"retention": 0}, "retention must be at least 1 second"),
    ({"price_get": -1}, "price_get must be a whole number"),
    ({"price_get": True}, "price_get must be"),
    ({"price_get": 10**16}, "price_get must be a whole number"),
    ({"listen": 5}, "listen is not a setting the page edits"),
])
def test_bad_settings_are_refused_and_nothing_is_written(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        save_settings(tmp_path, changes)
    assert not (tmp_path / CONFIG_FILE).exists()


def test_dht_size_estimate() -> None:
    own = bytes(32)
    few = [bytes([0xFF, n]) + bytes(30) for n in range(5)]
    assert dht_size_estimate(own, few) == 6  # the table is the whole network
    # K peers spread evenly over the ID space, as K of about 1024 nodes would be nearest.
    step = (1 << 256) // 1024
    near = [((i + 1) * step).to_bytes(32, "big") for i in range(K)]
    assert dht_size_estimate(own, near) == 1024


def test_host_speeds_average_per_host_and_stay_bounded() -> None:
    speeds = HostSpeeds(clock=lambda: 1_700_000_000.0)
    a, b = b"a" * 32, b"b" * 32
    speeds.record(a, 1000, 1.0)
    speeds.record(a, 2000, 1.0)
    speeds.record(b, 500, 0.0)  # a transfer within a clock tick is fast, not infinite
    first = speeds.get(a)
    assert first is not None and first.transfers == 2
    assert first.bytes_per_s == (1 - SPEED_WEIGHT) * 1000 + SPEED_WEIGHT * 2000
    assert 0 < speeds.get(b).bytes_per_s < float("inf")  # type: ignore[union-attr]
    hosts = [{"node_id": a.hex(), "sats": 5}, {"node_id": (b"c" * 32).hex(), "sats": 1}]
    rows = with_speeds(hosts, speeds)
    assert rows[0]["bytes_per_s"] == round(first.bytes_per_s) and rows[0]["transfers_timed"] == 2
    assert rows[1]["bytes_per_s"] is None and rows[1]["transfers_timed"] == 0
    for n in range(MAX_HOSTS_TRACKED):
        speeds.record(n.to_bytes(32, "big"), 1, 1.0)
    assert speeds.get(a) is None and speeds.get((MAX_HOSTS_TRACKED - 1).to_bytes(32, "big")) is not None


def channel(channel_id: str, role: str, peer: str) -> ChannelRecord:
    return ChannelRecord(channel_id=channel_id, role=role, peer=peer, state="open", capacity=50_000, total=0,
                         payer_sig=None, funding_txid=channel_id[:64], funding_vout=1, expiry=300, params=b"",
                         opened_at=1.7e9, updated_at=1.7e9)


def fill_ledger(path: Path) -> None:
    """A paid peer (one-way accounts) and a peer in balance mode, as the exchange records them."""
    with Ledger.open(path) as ledger:
        ledger.add_channel(channel("ab" * 32 + ":1", "payee", PAYER))
        ledger.record_payment(peer=PAYER, direction="in", kind="get", chunk="01" * 32, price=42, amount=42,
                              channel_id="ab" * 32 + ":1", total=42, payer_sig=b"\x30", now=1.7e9)
        # Within its free allowance: served, charged, not paid.
        ledger.record_payment(peer=PAYER, direction="in", kind="get", chunk="02" * 32, price=30, amount=0, now=1.7e9)
        # The balance-mode peer gave us more than we gave it, and we settled part of it through our channel.
        ledger.record_balance(RECIPROCAL, PeerBalance(given=900, taken=1800, paid_out=700, acked_given=900))
        ledger.add_channel(channel("ba" * 32 + ":0", "payer", RECIPROCAL))
        ledger.record_payment(peer=RECIPROCAL, direction="out", kind="settle", chunk="03" * 32, price=0, amount=700,
                              channel_id="ba" * 32 + ":0", total=700, payer_sig=b"\x30", now=1.7e9)


async def test_the_earnings_page_route_gives_the_service_balances_mu_earnings_prints(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill_ledger(tmp_path / LEDGER_FILE)
    with Ledger.open(tmp_path / LEDGER_FILE) as ledger:
        async with open_dht(Identity(secrets.token_bytes(32))) as dht, trio.open_nursery() as nursery:
            control = ControlServer(tmp_path, dht.node_id)
            register_report_routes(control, dht, ledger)
            await nursery.start(control.serve)
            reply = await ControlClient.from_data_dir(tmp_path).call("GET", "earnings")
            nursery.cancel_scope.cancel()
    # specs/payments.md §Service balance: net = given - taken + paid_out - paid_in, what the peer owes us.
    assert reply["balances"] == {
        "given": 972, "taken": 1800, "net": -170, "paid_in": 42, "paid_out": 700,
        "per_peer": {PAYER: {"given": 72, "taken": 0, "net": 30, "paid_in": 42, "paid_out": 0},
                     RECIPROCAL: {"given": 900, "taken": 1800, "net": -200, "paid_in": 0, "paid_out": 700}},
    }
    # The node stopped: `mu earnings --json` reads the ledger file and prints the same numbers.
    assert await trio.to_thread.run_sync(main, ["--data-dir", str(tmp_path), "earnings", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["balances"] == reply["balances"]
