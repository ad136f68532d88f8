"""Repair of k-of-n files by their owner (specs/erasure.md §8 Repair).

One upkeep round audits every share of a file at its recorded host
(:class:`node.files.audit.Auditor`); every share whose audit failed, or
whose host is dropped or was never found, is rebuilt from the chunks the
owner kept (or, when they are gone, from any k shares fetched from live
hosts: :meth:`node.files.audit.Auditor.shares`) and put, paid, on a new host: the live node closest to the
share's address that holds no other share of the stripe and is not
dropped.  The new placements and what they cost are recorded in the
:class:`node.files.audit.ErasureBook`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import trio

from node.files.audit import Auditor, FileRecord, ShareAudit
from node.files.stripes import put_on_one
from node.files.uploader import SPARE_CANDIDATES, Put

log = logging.getLogger("mu.repair")

# A stripe is repaired as soon as it has fewer than n shares passing audits (specs/erasure.md §8): with
# 4-of-8, waiting for a lower threshold saves PUTs but leaves less margin between audit periods.


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairReport:
    audits: tuple[ShareAudit, ...]
    repaired: tuple[tuple[int, int, bytes], ...]  # (stripe, share, new host)
    unrepaired: tuple[tuple[int, int], ...]  # (stripe, share) for which no new host took the share
    alive: tuple[int, ...]  # per stripe, shares passing audits or just placed


async def upkeep_file(auditor: Auditor, map_address: bytes, put: Put) -> RepairReport:
    """Audit the file's shares, then rebuild and re-place every failed one.

    ``put`` is the (paying) PUT; the caller counts what it spends.

    Raises:
        KeyError: no k-of-n file with this map is owned here.
        node.store.ChunkNotFound: the owner lost the file's chunks.
    """
    audits = await auditor.audit_file(map_address)
    record = auditor.book.load(map_address)
    assert record is not None  # audit_file raised KeyError otherwise
    stripe_map = await trio.to_thread.run_sync(auditor.stripe_map, map_address)
    failed = {(a.stripe, a.share) for a in audits if not a.passed}
    failed |= record.missing(set())
    dropped = auditor.book.dropped()
    view = await auditor.dialer.view(map_address)
    hosts = [list(stripe_hosts) for stripe_hosts in record.hosts]
    repaired: list[tuple[int, int, bytes]] = []
    unrepaired: list[tuple[int, int]] = []
    dead = set(dropped) | {a.host for a in audits if not a.passed}
    for index in sorted({s for s, _ in failed}):
        shares = await auditor.shares(map_address, stripe_map, index)
        for i in sorted(i for s, i in failed if s == index):
            keep = {h for j, h in enumerate(hosts[index]) if h and (index, j) not in failed}
            host = await put_on_one(auditor.dialer, view, put, stripe_map.stripes[index].shares[i], shares[i],
                                     keep, dead, stripe_map.n + 2 * SPARE_CANDIDATES)
            if host is None:
                unrepaired.append((index, i))
                hosts[index][i] = b""
                continue
            log.info("share %d/%d moved to %s", index, i, host.hex())
            hosts[index][i] = host
            failed.discard((index, i))
            repaired.append((index, i, host))
    alive = tuple(sum(1 for i, h in enumerate(s) if (index, i) in record.padding or (h and (index, i) not in failed))
                  for index, s in enumerate(hosts))
    fresh = auditor.book.load(map_address) or record
    auditor.book.save(replace(fresh, hosts=tuple(tuple(s) for s in hosts)))
    return RepairReport(audits=tuple(audits), repaired=tuple(repaired), unrepaired=tuple(unrepaired), alive=alive)


def add_spent(record: FileRecord, sats: int) -> FileRecord:
    return replace(record, sats_spent=record.sats_spent + sats)
