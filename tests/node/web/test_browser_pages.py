"""The Sync, Files (upload progress) and Settings pages in a real Chromium on a devnet (issue 18).

A directory is synced through the control API (as `mu sync add` does);
the page lists it with its files, size and last round, and pauses and
resumes it (the node's status follows); its conflict copies are listed.  A folder snapshotted through the
API (as `mu folder snapshot`) shows its history in the page, and a
snapshot is restored from the page into a new directory, byte-identical.
An upload in the Files page shows the node's replication (chunks placed,
replicas confirmed), the Network page the hosts it paid with their
speed, and the Earnings page the service balance with each peer and in
total, the numbers of `mu earnings`; a storage limit saved in the
Settings page applies to the running node at once.
Screenshots are kept (paths printed); no page logs a console error and
every request goes to the node itself.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from typing import Any

import pytest
import trio

from node.api.control import ControlClient
from node.ledger import LEDGER_FILE, Ledger
from protocol.folders import WriteCap
from protocol.identity import SEED_SIZE
from protocol.payments.balance import PeerBalance
from tests.node.network.test_devnet import start_devnet, stop_devnet
from tests.node.web.test_browser import CHROMIUM, Browser, call, playwright_api

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (scripts/test installs Debian's package)"),
]

NODES = 4
MIB = 1 << 20
BALANCE_KEYS = ("given", "taken", "net", "paid_in", "paid_out")
#: A peer in balance mode (the devnet's nodes pay per request: none offers storage).
RECIPROCAL = "ef" * 20
#: Loads of the Earnings page tried before giving up on a ledger that changes during each (audits, renewals).
LOAD_ATTEMPTS = 5
#: The service balance table as the page shows it: per peer (``data-peer``) and the total row.
READ_BALANCES = """() => {
    const row = (tr) => Object.fromEntries([...tr.querySelectorAll("td[data-key]")].map((td) => [td.dataset.key, td.textContent]));
    return {per_peer: Object.fromEntries([...document.querySelectorAll("#balances tr")].map((tr) => [tr.dataset.peer, row(tr)])),
            total: row(document.querySelector("#balance-total tr"))};
}"""


def run_stream(data_dir: Path, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        return await ControlClient.from_data_dir(data_dir).run_stream(path, body, lambda event: None)
    return trio.run(run)


def shown_balances(browser: Browser, page: Any, data_dir: Path) -> dict[str, Any]:
    """The balances of ``GET /v1/earnings``, once the Earnings page showed them while the ledger stood still."""
    for _ in range(LOAD_ATTEMPTS):
        before = call(data_dir, "GET", "earnings")["balances"]
        browser.show(page, "earnings")
        shown = page.evaluate(READ_BALANCES)
        if call(data_dir, "GET", "earnings")["balances"] == before:
            assert shown == {"per_peer": {peer: {k: str(row[k]) for k in BALANCE_KEYS}
                                          for peer, row in before["per_peer"].items()},
                             "total": {k: str(before[k]) for k in BALANCE_KEYS}}
            return dict(before)
    pytest.fail(f"A's ledger changed during each of {LOAD_ATTEMPTS} loads of the Earnings page")


def test_sync_upload_progress_and_a_live_setting(tmp_path: Path) -> None:
    synced = tmp_path / "synced"
    synced.mkdir()
    (synced / "a.txt").write_text("alpha\n")
    (synced / "b.bin").write_bytes(secrets.token_bytes(5000))
    conflict = "a.sync-conflict-20260101-000000-AEAQCAI.txt"  # as a merge names a losing copy (specs/sync.md §13)
    (synced / conflict).write_text("alpha, the other device's\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.txt").write_text("meow\n")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    proc, summary = start_devnet(tmp_path, NODES)
    try:
        data_dir = Path(summary["nodes"][0]["data_dir"])
        added = call(data_dir, "POST", "sync-add", {"path": str(synced)})
        assert added["write_link"].startswith("mu:folder-w:")
        folder_link = WriteCap(secrets.token_bytes(SEED_SIZE)).to_string()
        snapshot = run_stream(data_dir, "folder-snapshot", {"link": folder_link, "path": str(photos)})
        assert snapshot["number"] == 1
        with playwright_api.sync_playwright() as pw:
            browser = Browser(pw, shots)
            page = browser.page_for(data_dir)
            browser.show(page, "sync")
            row = page.locator(f"#sync-folders tr[data-path='{synced}']")
            # The page refreshes itself: the first round counts the files and finds the conflict copy.
            row.locator("td").nth(1).filter(has_text="3").wait_for()
            # Once published, with nothing left to send or fetch: up to date, as Dropbox says it.
            page.locator(f"#sync-folders tr[data-path='{synced}'][data-state=up-to-date]").wait_for()
            assert row.locator("td.state").inner_text() == "up to date"
            assert page.locator("#sync-conflicts li").all_inner_texts() == [f"{synced}/{conflict}"]
            assert page.locator("#sync-unreadable li").all_inner_texts() == ["none"]
            browser.screenshot(page, "sync")
            row.locator("button.pause").click()
            page.locator(f"#sync-folders tr[data-path='{synced}'][data-state=paused]").wait_for()
            assert call(data_dir, "POST", "sync-status", {"path": str(synced)})["paused"] is True
            browser.screenshot(page, "sync-paused")
            page.locator(f"#sync-folders tr[data-path='{synced}'] button.resume").click()
            page.locator(f"#sync-folders tr[data-path='{synced}'][data-state=up-to-date]").wait_for()
            assert call(data_dir, "POST", "sync-status", {"path": str(synced)})["paused"] is False

            # An upload shows the node's replication as it goes: every chunk placed, replicas counted.
            src = tmp_path / "upload.bin"
            src.write_bytes(secrets.token_bytes(8 * MIB))  # more than the hosts' free allowances: paid PUTs
            browser.show(page, "files")
            page.set_input_files("#picker", str(src))
            page.wait_for_selector("body[data-uploaded]", state="attached")
            placed, chunks, replicas = map(int, page.evaluate("document.body.dataset.placed").split("/"))
            link = page.evaluate("document.body.dataset.uploaded")
            assert placed == chunks > 1 and replicas >= chunks
            assert page.locator("#upload-status").inner_text().endswith(f"{replicas} replicas confirmed.")
            assert link in [f["link"] for f in call(data_dir, "GET", "web/files")["files"]]
            browser.screenshot(page, "files-uploaded")

            # Network: the hosts just paid, each with its price and the speed its PUTs went at.
            browser.show(page, "network")
            hosts = call(data_dir, "GET", "web/network")["hosts"]
            assert hosts and all(h["bytes_per_s"] > 0 and h["transfers_timed"] > 0 for h in hosts), hosts
            cells = page.locator("#hosts td.speed").all_inner_texts()
            assert len(cells) == len(hosts) and all(c.endswith("/s") for c in cells), cells
            browser.screenshot(page, "network")

            # Earnings: the service balance with each peer and in total.  A's paid PUTs show as service taken
            # and paid out; a balance-mode peer's row is written into A's ledger as the exchange records one.
            with Ledger.open(data_dir / LEDGER_FILE) as ledger:
                ledger.record_balance(RECIPROCAL, PeerBalance(given=900, taken=1800, acked_given=900))
            balances = shown_balances(browser, page, data_dir)
            assert balances["per_peer"][RECIPROCAL] == {"given": 900, "taken": 1800, "net": -900, "paid_in": 0,
                                                        "paid_out": 0}
            paid = {peer for peer, row in balances["per_peer"].items() if row["taken"] > 0 and row["paid_out"] > 0}
            paid_hosts = {h["node_id"] for h in hosts if h["sats"] > 0}
            assert paid_hosts and paid_hosts <= paid, balances
            browser.screenshot(page, "earnings")

            # Settings: the storage limit applies at once, prices at the next start; the page says which.
            browser.show(page, "settings")
            assert page.locator(".applies[data-name=quota]").inner_text().strip() == "applies now"
            assert "next start" in page.locator(".applies[data-name=price_get]").inner_text()
            page.fill("input[name=quota]", str(50 * MIB))
            page.click("#settings-form button[type=submit]")
            page.wait_for_selector("#settings-status:has-text('Applied now: quota')")
            assert call(data_dir, "GET", "web/settings")["running"]["quota"] == 50 * MIB
            browser.screenshot(page, "settings-saved")

            # History of a snapshot folder, and a restore from the page.
            browser.show(page, "sync")
            page.fill("#history-link", folder_link)
            page.click("#history-form button[type=submit]")
            page.locator("#history tr[data-number='1']").locator("button").click()
            restored = tmp_path / "restored"
            page.fill("#restore-output", str(restored))
            page.click("#restore-form button[type=submit]")
            page.wait_for_selector("body[data-restored='1']", state="attached")
            assert (restored / "cat.txt").read_text() == "meow\n"
            browser.screenshot(page, "sync-restored")
            assert browser.errors == [] and browser.foreign == []
            browser.browser.close()
    finally:
        if proc.poll() is None:
            stop_devnet(proc, summary)
