"""scripts/bench-vs-bittorrent's mu half on a real devnet: it measures what issue 22 asks, or fails.

libtorrent and Tahoe-LAFS live in the benchmark's own venv, so this test
runs only mu's part (scripts/bench_mu_devnet.py): real ``mu chain`` and
``mu node`` processes, ``mu add`` and paid ``mu get`` through the CLI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from pathlib import Path

import pytest
import trio

REPO_ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from bench_mu_devnet import MIB, AddFigures, GetFigures, MuRun, run_mu  # noqa: E402
from bench_tahoe import Timed  # noqa: E402
from bench_vs_bittorrent import Run, fetch_ok, print_summary  # noqa: E402


def check_fetch(got: GetFigures, hosts: int) -> None:
    assert got.hosts == hosts
    assert got.correct and got.local_chunks == 0
    assert got.chunks_fetched > 0 and got.sats_spent > 0
    assert 0 < got.hosts_paid <= hosts and got.ledger_spent >= got.sats_spent
    assert 0 < got.hosts_earned <= got.ledger_spent  # a host never earns more than it was paid
    assert got.first_byte is not None and 0 < got.first_byte < got.seconds
    assert 0 < got.startup and 0 < got.startup_cpu  # the command's start-up, timed beside the first byte
    assert got.node_cpu > 0 and got.command_cpu > 0 and got.peak_rss_mib > 0
    assert fetch_ok(got)


@pytest.mark.slow
def test_mu_half_adds_and_fetches_paid_from_nodes_holding_none(tmp_path: Path) -> None:
    sample = tmp_path / "sample.bin"
    data = os.urandom(4 * MIB + 12345)
    sample.write_bytes(data)
    run = trio.run(run_mu, tmp_path / "mu", sample, hashlib.sha256(data).digest(), lambda text: None)
    for add in (run.add_all_up, run.add_one_down):
        assert add.under_replicated == 0 and add.replicas_confirmed == 3 * add.chunks
        assert add.seconds > 0 and add.cpu_seconds > 0 and add.link.startswith("mu:")
    assert run.add_all_up.link != run.add_one_down.link  # a fresh key: the second add moved new chunks
    check_fetch(run.get_3_hosts, 3)
    check_fetch(run.get_1_host, 1)


@pytest.mark.slow
def test_the_add_cuts_fixed_size_chunks_when_asked(tmp_path: Path) -> None:
    sample = tmp_path / "sample.bin"
    data = os.urandom(4 * MIB + 12345)
    sample.write_bytes(data)
    run = trio.run(run_mu, tmp_path / "mu", sample, hashlib.sha256(data).digest(), lambda text: None, "devnet",
                   128 * 1024)
    # 33 data chunks of 128 KiB at most and their root: content-defined chunks are 256 KiB at least, so the
    # fixed size reached mu add.
    assert run.add_all_up.chunks == run.add_one_down.chunks == 34
    assert run.add_all_up.under_replicated == 0
    check_fetch(run.get_3_hosts, 3)


def test_a_fetch_with_a_local_chunk_or_no_payment_is_not_the_one_measured() -> None:
    good = GetFigures(hosts=1, seconds=2.0, first_byte=0.5, startup=0.3, startup_cpu=0.3, local_chunks=0, chunks_fetched=5, sats_spent=400,
                      ledger_spent=400, hosts_paid=1, hosts_earned=400, node_cpu=0.3, command_cpu=0.5, host_cpu=0.2,
                      peak_rss_mib=60.0, correct=True)
    assert fetch_ok(good)
    for bad in ({"local_chunks": 1}, {"ledger_spent": 0}, {"hosts_paid": 0}, {"hosts_paid": 2}, {"correct": False}):
        assert not fetch_ok(dataclasses.replace(good, **bad))


def test_the_summary_prints_each_must_hold_ratio_as_the_median_of_its_runs(capsys: pytest.CaptureFixture[str]) -> None:
    def fetch(seconds: float, hosts: int) -> GetFigures:
        return GetFigures(hosts=hosts, seconds=seconds, first_byte=0.5, startup=0.3, startup_cpu=0.3, local_chunks=0, chunks_fetched=65,
                          sats_spent=6000, ledger_spent=6000, hosts_paid=hosts, hosts_earned=6000, node_cpu=1.0,
                          command_cpu=0.5, host_cpu=0.7, peak_rss_mib=70.0, correct=True)

    def add(seconds: float) -> AddFigures:
        return AddFigures(seconds=seconds, chunks=65, replicas_confirmed=195, under_replicated=0, link="mu:x",
                          node_cpu=1.0, command_cpu=0.3, host_cpu=0.7)

    runs = [Run(libtorrent=1.0, libtorrent_cpu=0.5, tahoe_put=Timed(4.0, 8.0, ""), tahoe_get=Timed(3.0, 4.0, ""),
                mu=MuRun(add_all_up=add(up), add_one_down=add(down), get_3_hosts=fetch(get, 3),
                         get_1_host=fetch(2 * get, 1)))
            for up, down, get in ((2.0, 2.0, 1.0), (1.0, 3.0, 0.5), (4.0, 4.0, 4.0))]
    print_summary(64, runs, "2.1.1.0")
    out = " ".join(capsys.readouterr().out.split())
    # 3 hosts / libtorrent per run: 1.0, 2.0, 0.25 -> 1.00; add / tahoe put: 2.0, 4.0, 1.0 -> 2.00;
    # one down / all up: 1.0, 3.0, 1.0 -> 1.00; 1 host / libtorrent: 0.5, 1.0, 0.125 -> 0.50.
    assert "paid mu get 3 hosts / libtorrent 1.00x (>= 1x: yes; runs: 1.00, 2.00, 0.25)" in out
    assert "paid mu get 1 host / libtorrent 0.50x (>= 1x: NO" in out
    assert "networked mu add / tahoe put 2.00x (>= 2x: yes" in out
    assert "add time, one candidate down / all up 1.00x (<= 1.5x: yes" in out
    assert "libtorrent, seeder -> downloader 64.0 MiB/s 128.0 MiB per CPU s" in out
    assert "first byte 0.50 s (command start-up 0.30 s of it)" in out
    assert "tahoe put (2-of-4) 16.0 MiB/s 8.0 MiB per CPU s" in out
