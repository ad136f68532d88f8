"""One libtorrent seeder to one libtorrent downloader on loopback: the BitTorrent reference of scripts/bench-vs-bittorrent.

Usage (with the benchmark venv's Python, where the ``libtorrent`` wheel is)::

    .venv-bench/bin/python scripts/bench_libtorrent.py FILE WORKDIR

Makes a torrent of FILE, starts two libtorrent sessions in this process
(each with its own network and disk threads, as two clients would be), the
seeder on the directory FILE is in and the downloader on an empty
WORKDIR/download, connects the downloader to the seeder on 127.0.0.1 and
times the downloader from ``add_torrent`` to the torrent finished (every
piece downloaded, hash-checked and written).  DHT, local discovery, UPnP
and NAT-PMP are off: the two peers only talk to each other, over TCP, with
libtorrent's high-performance seed settings (see ``_session``).  Prints one JSON
object: seconds, the CPU seconds of both sessions over the same span, bytes,
libtorrent's version.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import libtorrent as lt

FINISH_DEADLINE = 600.0  # seconds; the benchmark fails rather than hang
ALERT_WAIT_MS = 100
PIECE_SIZE = 1 << 20  # 1 MiB pieces, the size of mu's chunks


def _cpu_seconds() -> float:
    """This process's CPU seconds so far: both sessions' threads, seeder and downloader."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _session() -> lt.session:
    """A session listening on a loopback port of the OS's choosing, talking to no one unasked.

    libtorrent at its fastest here: its own ``high_performance_seed`` preset,
    TCP only.  With uTP left on, the two sessions talk uTP over loopback and
    its delay-based congestion control held a 256 MiB transfer to 7-9 MiB/s
    using 2-3 CPU seconds (36 MiB/s for 128 MiB); over TCP the same transfer
    runs at 170-185 MiB/s (2026-12-06, quiet machine).  mu is measured
    against BitTorrent's best, not a throttled one.
    """
    settings = lt.high_performance_seed()
    settings.update({
        "listen_interfaces": "127.0.0.1:0",
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })
    return lt.session(settings)


def _make_torrent(path: Path) -> lt.torrent_info:
    torrent = lt.create_torrent(lt.list_files(str(path)), PIECE_SIZE)
    lt.set_piece_hashes(torrent, str(path.parent))
    return lt.torrent_info(torrent.generate())


def _params(info: lt.torrent_info, save_path: Path, flags: int = 0) -> lt.add_torrent_params:
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(save_path)
    params.flags |= flags
    return params


def _wait_for(session: lt.session, kind: type, handle: lt.torrent_handle, deadline: float) -> None:
    """Pop alerts until one of ``kind`` for ``handle``; an error alert for it ends the run."""
    while time.monotonic() < deadline:
        session.wait_for_alert(ALERT_WAIT_MS)
        for alert in session.pop_alerts():
            if getattr(alert, "handle", None) != handle:
                continue
            if isinstance(alert, kind):
                return
            if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                raise RuntimeError(f"libtorrent: {alert.message()}")
    raise RuntimeError(f"libtorrent: no {kind.__name__} within {FINISH_DEADLINE:.0f} s")


def main(argv: list[str]) -> int:
    path, work = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    info = _make_torrent(path)
    seeder, downloader = _session(), _session()
    # seed_mode: the seeder trusts its file instead of hashing it first, so only the transfer is timed.
    seed = seeder.add_torrent(_params(info, path.parent, lt.torrent_flags.seed_mode))
    deadline = time.monotonic() + FINISH_DEADLINE
    while not seed.status().is_seeding and time.monotonic() < deadline:
        seeder.wait_for_alert(ALERT_WAIT_MS)
        seeder.pop_alerts()
    (work / "download").mkdir(parents=True, exist_ok=True)
    os.sync()  # as before every timed command of the benchmark (bench_proc.run_timed): a clean disk
    began, cpu_before = time.monotonic(), _cpu_seconds()
    handle = downloader.add_torrent(_params(lt.torrent_info(info), work / "download"))
    handle.connect_peer(("127.0.0.1", seeder.listen_port()))
    _wait_for(downloader, lt.torrent_finished_alert, handle, began + FINISH_DEADLINE)
    seconds, cpu = time.monotonic() - began, _cpu_seconds() - cpu_before
    got = (work / "download" / path.name).stat().st_size
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "bytes": got, "version": lt.__version__}), flush=True)
    return 0 if got == path.stat().st_size else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
