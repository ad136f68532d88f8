"""Audits on a devnet of real node processes (issue 19, "Must hold"): a host that deleted a share and a
host whose share turned to garbage fail their audits, are paid nothing for them, and are dropped from
placement; everyone else passes and is paid for every audit, the ledgers agreeing to the sat
(specs/erasure.md §7.4 Paid audits)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from node.ledger import LEDGER_FILE, Ledger
from node.store import STORE_DIR
from protocol.erasure import StripeMap
from protocol.payments import Direction, Kind
from tests.helpers.erasure import owner_call
from tests.node.network.test_devnet import start_devnet, stop_devnet

KIB = 1 << 10


def share_path(node: dict, address_hex: str) -> Path:
    return Path(node["data_dir"]) / STORE_DIR / address_hex[:2] / address_hex


@pytest.mark.slow
def test_deleted_and_garbage_shares_fail_audits_and_their_hosts_are_dropped(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "one.bin", tmp_path / "two.bin"
    first.write_bytes(os.urandom(700 * KIB))
    second.write_bytes(os.urandom(700 * KIB))
    monkeypatch.setenv("MU_AUDIT_PERIOD", "1e9")  # the upkeep timer stays out of this test (its nodes inherit it)
    proc, summary = start_devnet(tmp_path, 11)  # the owner, 10 hosts: 8 are left once 2 are dropped
    try:
        nodes = summary["nodes"]
        call = owner_call(nodes[0])
        by_id = {n["node_id"]: n for n in nodes}
        added = call("add", {"path": str(first), "k": 4, "n": 8})
        assert added["short_stripes"] == []
        hosts = added["hosts"][0]
        shares = call("audit", {"stripes": added["stripes"]})
        assert all(a["passed"] for a in shares["audits"]) and shares["dropped"] == []
        # Past the hosts' free allowance (the PUTs used it), every audit that checked is paid on its own.
        assert all(a["sats"] > 0 for a in shares["audits"])
        assert shares["sats_spent"] == sum(a["sats"] for a in shares["audits"])
        # The share addresses are in the stripe map, which the owner keeps in its store.
        stripe_map = StripeMap.parse(share_path(nodes[0], added["stripes"]).read_bytes())
        # Every share is audited, but for the zero blocks completing the last stripe: no shares (§3).
        assert len(shares["audits"]) == sum(len(s.stored(4)) for s in stripe_map.stripes)
        stripe = stripe_map.stripes[0]

        stripe_map_shares = {(a["stripe"], a["share"]): a["host"] for a in shares["audits"]}
        deleted, garbled = stripe.stored(4)[1:3]
        deleter, liar = hosts[deleted], hosts[garbled]
        assert stripe_map_shares[(0, deleted)] == deleter
        share_path(by_id[deleter], stripe.shares[deleted].hex()).unlink()
        garbage = share_path(by_id[liar], stripe.shares[garbled].hex())
        garbage.write_bytes(os.urandom(garbage.stat().st_size))

        audited = call("audit", {"stripes": added["stripes"]})
        failed = {(a["stripe"], a["share"]): a for a in audited["audits"] if not a["passed"]}
        assert set(failed) == {(0, deleted), (0, garbled)}
        assert failed[(0, garbled)]["reason"] == "wrong proof" and "refused" in failed[(0, deleted)]["reason"]
        assert failed[(0, deleted)]["sats"] == failed[(0, garbled)]["sats"] == 0
        assert sorted(audited["dropped"]) == sorted([deleter, liar])

        again = call("add", {"path": str(second), "k": 4, "n": 8})
        assert again["short_stripes"] == []
        placed = {h for stripe_hosts in again["hosts"] for h in stripe_hosts}
        assert deleter not in placed and liar not in placed
    finally:
        if proc.poll() is None:
            stop_devnet(proc, summary)
    owner_id = nodes[0]["node_id"]
    with Ledger.open(Path(nodes[0]["data_dir"]) / LEDGER_FILE) as ledger:
        spent = [r for r in ledger.payments() if r.direction is Direction.OUT]
    passed = Counter(a["host"] for round_ in (shares, audited) for a in round_["audits"] if a["passed"])
    paid = Counter()
    for round_ in (shares, audited):
        for a in round_["audits"]:
            paid[a["host"]] += a["sats"]
    for host in {a["host"] for a in shares["audits"]}:
        with Ledger.open(Path(by_id[host]["data_dir"]) / LEDGER_FILE) as ledger:
            earned = [r for r in ledger.payments(peer=owner_id) if r.direction is Direction.IN]
        audits = [r for r in earned if r.kind is Kind.AUDIT]
        # One charge per audit that checked, none for a failed one (the deleter and the liar: the first round only).
        assert len(audits) == passed[host] == (1 if host in (deleter, liar) else 2)
        paid_out = [r for r in spent if r.peer == host]
        assert sum(r.amount for r in audits) == paid[host] == sum(r.amount for r in paid_out if r.kind is Kind.AUDIT)
        assert sum(r.amount for r in earned) == sum(r.amount for r in paid_out) > 0  # paid == earned, to the sat
