"""Reading a stopped devnet's ledgers and checking that what each node paid, its host recorded as earned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.ledger import LEDGER_FILE, Ledger


def earnings(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every node's ledger report (``Ledger.earnings``), by node ID, read once the nodes have stopped."""
    reports = {}
    for node in nodes:
        with Ledger.open(Path(node["data_dir"]) / LEDGER_FILE) as ledger:
            reports[node["node_id"]] = ledger.earnings()
    return reports


def assert_paid_equals_earned(reports: dict[str, dict[str, Any]]) -> None:
    """Sats paid in total equal sats earned (and some were), and for every payer and host pair to the sat."""
    earned = sum(r["earned"] for r in reports.values())
    spent = sum(r["spent"] for r in reports.values())
    assert earned == spent > 0
    for payer_id, report in reports.items():
        for peer, row in report["per_peer"].items():
            if row["spent"]:  # what this node paid that peer, the peer recorded as earned from it
                assert reports[peer]["per_peer"][payer_id]["earned"] == row["spent"], (payer_id, peer)
