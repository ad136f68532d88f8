"""`mu earnings`, `mu ledger`, `mu channels` read a real ledger file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.cli import main
from node.ledger import LEDGER_FILE, ChannelRecord, Ledger


def fill(data_dir: Path) -> None:
    with Ledger.open(data_dir / LEDGER_FILE) as ledger:
        ledger.add_channel(ChannelRecord(
            channel_id="ab" * 32 + ":1", role="payee", peer="cd" * 20, state="open", capacity=50_000, total=0,
            payer_sig=None, funding_txid="ab" * 32, funding_vout=1, expiry=300, params=b"", opened_at=1.7e9,
            updated_at=1.7e9))
        ledger.record_payment(peer="cd" * 20, direction="in", kind="get", chunk="01" * 32, price=42, amount=42,
                              channel_id="ab" * 32 + ":1", total=42, payer_sig=b"\x30", now=1.7e9)


def test_commands_report_the_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data-dir", str(tmp_path), "earnings"]) == 2  # no ledger yet
    fill(tmp_path)
    assert main(["--data-dir", str(tmp_path), "earnings", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["earned"], report["pending"], report["settled"]) == (42, 42, 0)
    assert main(["--data-dir", str(tmp_path), "ledger", "--json"]) == 0
    dump = json.loads(capsys.readouterr().out)
    assert dump["payments"][0]["amount"] == 42 and dump["channels"][0]["payer_sig"] == "30"
    assert main(["--data-dir", str(tmp_path), "channels"]) == 0
    assert "total 42 of 50000 sats" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "ledger"]) == 0
    assert "price 42" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "earnings"]) == 0
    assert "earned:  42 sats" in capsys.readouterr().out


def test_earnings_prints_the_service_balance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(tmp_path)
    assert main(["--data-dir", str(tmp_path), "earnings", "--json"]) == 0
    balances = json.loads(capsys.readouterr().out)["balances"]
    assert balances["per_peer"]["cd" * 20] == {"given": 42, "taken": 0, "net": 0, "paid_in": 42, "paid_out": 0}
    assert (balances["given"], balances["net"]) == (42, 0)
    assert main(["--data-dir", str(tmp_path), "earnings"]) == 0
    text = capsys.readouterr().out
    assert "service balance" in text
    assert "cd" * 20 + "        42         0         0        42         0" in text
