"""The node's network operations behind the control API (specs/network.md §6 Control API).

``NetworkService`` serves ``add``, ``get`` and ``pin`` for the CLI:

* ``add``: encrypt a file into the node's store, pushing every chunk to its
  R closest nodes as it is sealed, announce the node as a provider of the root;
* ``get``: find the holders of each chunk and fetch from several at once into
  an output file (the plaintext is written once; a rerun after a failure
  resumes from the part file it left, specs/network.md §5);
* ``pin``: fetch every chunk into the store and announce the node as a
  provider, so it hosts the file from then on.

``get`` with ``raw`` and ``pin`` of a bare root work without the key: the
chunks are walked and verified through the manifests' cleartext headers
(a verify cap, specs/chunks.md §6.5 Walking with the bare root) and never decrypted.

Long operations stream progress events (newline-delimited JSON).

Two read-only reports are served beside them (``register_report_routes``):
``GET /v1/peers`` (the live routing table) and ``GET /v1/earnings`` (from
the open ledger).  ``mu peers`` and ``mu earnings`` print the same JSON
whether the node answers or, when none runs, the CLI reads the saved table
file and the ledger itself; both shapes are built here so they cannot drift.

Pin bookkeeping: chunks of files added or pinned here are pinned in the
store (durably, with their root), so the retention GC never takes them and
``announce_pinned`` re-announces the roots after a restart (specs/network.md
§7 Replication, providers, republishing).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import trio

from node.api.control import ControlError, ControlServer, Emit, Param, ParamKind
from node.dht import DhtNode
from node.files.fetcher import FetchFailed, FetchProgress, PaidSource, fetch_file, fetch_raw
from node.files.local import AddResult, Sealed, add_file, load_convergence_secret
from node.ledger import Ledger
from node.files.locate import DhtResolver, PeerDialer, free_source
from node.exchange.paying import PaidPeers
from node.store.retention import pin_file
from node.store import ChunkNotFound, ChunkStore
from node.files.audit import Auditor, ErasureBook, FileRecord
from node.files.renewal import RenewalReport, renew_files, retention_of
from node.files.repair import RepairReport, add_spent, upkeep_file
from node.files.upkeep import UpkeepConfig, UpkeepTimer
from node.files.stripes import fetch_striped, shares_from_network, store_striped
from node.files.speeds import HostSpeeds
from node.transport import Session
from protocol.payments import Kind
from node.files.uploader import (ChunkPlaced, Put, ReplicaFailure, ReplicationReport, announce_root, free_put,
                                 replicate_chunks)
from protocol.erasure import MAX_N, RENEW_AHEAD, NotEnoughShares, StripeMapError
from protocol.chunks import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, IntegrityError, Link, LinkError
from protocol.fetch import DEFAULT_REPLICAS, DEFAULT_WINDOW, MAX_REPLICAS, MAX_WINDOW, dht_key
from protocol.kademlia import Contact

log = logging.getLogger("mu.network")

# Progress events forwarded per second at most during a fetch.
PROGRESS_PER_SECOND = 4
Json = dict[str, Any]


def _progress_event(p: FetchProgress) -> Json:
    c = p.chunks
    return {"event": "progress", "chunks_done": c.chunks_done, "chunks_queued": c.chunks_total,
            "local_chunks": p.local_chunks, "bytes_fetched": c.bytes_done, "bytes_written": p.bytes_written,
            "rate": round(p.rate), "sats_spent": c.sats_spent, "sats_lost": c.sats_lost,
            "hosts_banned": c.hosts_banned}


def _replicated_event(placed: ChunkPlaced) -> Json:
    return {"event": "replicated", "address": placed.address.hex(), "replicas": len(placed.replicas)}


def failure_json(failure: ReplicaFailure) -> Json:
    """One entry of the add result's ``failed_replicas`` (specs/network.md §6 Control API)."""
    return {"chunk": failure.chunk.hex(), "node_id": failure.node_id.hex() if failure.node_id else None,
            "reason": failure.reason}


# The body fields of each route (specs/network.md §6 Control API, Endpoints):
# the server refuses unknown, missing and mistyped ones; the handlers check ranges.
_STRING, _INTEGER, _BOOLEAN = Param(ParamKind.STRING), Param(ParamKind.INTEGER), Param(ParamKind.BOOLEAN)
ADD_PARAMS = {"path": Param(ParamKind.STRING, required=True), "convergent": _BOOLEAN, "replicas": _INTEGER,
              "chunk_size": _INTEGER, "name": _STRING, "k": _INTEGER, "n": _INTEGER}
PIN_PARAMS = {"link": Param(ParamKind.STRING, required=True), "max_price_per_mib": _INTEGER, "window": _INTEGER}
GET_PARAMS = {**PIN_PARAMS, "output": _STRING, "raw": _BOOLEAN, "stripes": _STRING}


def _int_field(body: Json, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise ControlError(400, "bad-argument", f"{name} must be an integer in {low}..{high}")
    return value


def _link_field(body: Json, *, need_key: bool = True) -> Link:
    text = body.get("link")
    if not isinstance(text, str):
        raise ControlError(400, "bad-argument", "link must be a string")
    try:
        link = Link.parse(text)
    except LinkError as exc:
        raise ControlError(400, "bad-link", str(exc)) from None
    if need_key and link.key is None:
        raise ControlError(400, "needs-key",
                           "decrypting needs the key: a bare root can only be fetched raw (--raw) or pinned")
    return link


def _map_field(body: Json) -> bytes:
    text = body.get("stripes")
    try:
        map_address = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        map_address = b""
    if len(map_address) != 32:
        raise ControlError(400, "bad-argument", "stripes must be a stripe map address (64 hex digits)")
    return map_address


class NetworkService:
    """Add, get and pin through the network, for one node.

    With ``paid`` (the running node's payer, wallet and chain client), every
    GET and PUT is paid through payment channels; without it, requests go
    unpaid (hosts serve them within their free allowance, or for free).
    """

    def __init__(self, data_dir: Path, store: ChunkStore, dialer: PeerDialer, paid: PaidPeers | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.store = store
        self.dialer = dialer
        self.paid = paid
        self.pinned: set[bytes] = set(store.pinned_roots())  # durable in the store index
        self.pins_announced = trio.Event()  # set once announce_pinned has run
        self.erasure = ErasureBook(self.data_dir)  # k-of-n files owned here (specs/erasure.md §7)
        self.upkeep: UpkeepTimer | None = None  # the node's upkeep timer, once ``upkeep_timer`` made it
        self.speeds = HostSpeeds()  # per-host transfer speeds of add and get, for the web app's Network page
        # An owner that no longer keeps a file's chunks rebuilds its stripes from k shares on the network.
        make_source = free_source if paid is None else functools.partial(PaidSource.open, paid)
        self.auditor = Auditor(store, dialer, self.erasure, paid,
                               network_shares=functools.partial(shares_from_network, dialer, make_source))
        self._upkeep = trio.Lock()  # one repair or renewal round at a time (the route's and the timer's)

    def register(self, control: ControlServer) -> None:
        control.stream_route("add", self.add, params=ADD_PARAMS)
        control.stream_route("get", self.get, params=GET_PARAMS)
        control.stream_route("pin", self.pin, params=PIN_PARAMS)
        stripes = {"stripes": Param(ParamKind.STRING, required=True)}
        control.stream_route("audit", self.audit, params=stripes)
        control.stream_route("repair", self.repair, params=stripes)
        control.stream_route("health", self.health, params={"root": _STRING})
        control.stream_route("renew", self.renew, params={"max_spend_per_month": _INTEGER, "within": _INTEGER})
        control.add_status("network", lambda: {"pinned": len(self.pinned), "chunks": len(self.store)})

    async def add(self, body: Json, emit: Emit) -> Json:
        """Body: ``path`` (absolute), ``convergent`` (bool), ``replicas`` (1..20)."""
        path = body.get("path")
        if not isinstance(path, str) or not Path(path).is_absolute():
            raise ControlError(400, "bad-argument", "path must be an absolute path")
        if not Path(path).is_file():
            raise ControlError(404, "not-found", f"no such file: {path}")
        replicas = _int_field(body, "replicas", DEFAULT_REPLICAS, 1, MAX_REPLICAS)
        # No chunk_size: content-defined chunks (specs/chunks.md §5.2); a size: fixed-size chunks.
        chunk_size = None if "chunk_size" not in body else _int_field(
            body, "chunk_size", MIN_CHUNK_SIZE, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise ControlError(400, "bad-argument", "name must be a string")
        secret = load_convergence_secret(self.data_dir) if body.get("convergent") is True else None
        add = functools.partial(add_file, self.store, Path(path), convergence_secret=secret, chunk_size=chunk_size,
                                name=name)
        # Each paid PUT says what the add still means to store (funding ahead, specs/payments.md §Channel recovery).
        try:
            planned = Path(path).stat().st_size * replicas
        except OSError:
            planned = 0  # gone since: the add itself says so
        put = self.speeds.timed_put(self._counted_put([0], planned))
        if "k" not in body and "n" not in body:
            return await self._add_replicated(add, emit, replicas, put)
        added = await self._add_locally(add, emit)
        # erasure coding policy (specs/erasure.md §Policy)
        n = _int_field(body, "n", 8, 1, MAX_N)
        k = _int_field(body, "k", 4, 1, n)
        spent = [0]
        counted_put = self._counted_put(spent)
        striped = await store_striped(added.link, self.store, self.dialer, k=k, n=n, put=counted_put,
                                      avoid=frozenset(self.erasure.dropped()))
        record = FileRecord(map_address=striped.map_address, root=added.link.root, hosts=striped.hosts,
                            sats_spent=spent[0], padding=striped.padding)
        self.erasure.save(record)
        if self.upkeep is not None:
            self.upkeep.files_changed()  # more shares to audit: the timer's wait is drawn again
        retained = 0 if self.paid is None else await retention_of(self.auditor, self.paid, striped.map_address)
        if retained:  # the shares are paid for until then (specs/erasure.md §9)
            self.erasure.save(dataclasses.replace(record, retained_until=int(time.time()) + retained))
        return {"link": str(added.link), "root": added.link.root.hex(), "size": added.size,
                "stripes": striped.map_address.hex(), "k": k, "n": n, "stripe_count": striped.stripes,
                "hosts": [[h.hex() for h in hosts] for hosts in striped.hosts],
                "map_hosts": [h.hex() for h in striped.map_hosts], "short_stripes": list(striped.short_stripes),
                "sats_spent": spent[0]}

    async def _add_locally(self, add: Callable[..., AddResult], emit: Emit, on_sealed: Sealed | None = None) -> AddResult:
        """Run ``add`` (``add_file`` but for ``on_sealed``) into the store, pin the file, emit ``added``."""
        try:
            added = await trio.to_thread.run_sync(functools.partial(add, on_sealed=on_sealed))
        except ValueError as exc:  # a chunk size that is not a power of two, a name too long
            raise ControlError(400, "bad-argument", str(exc)) from None
        # The add named every chunk by the hash it sealed it under: pin those, no walk re-reading and re-hashing.
        await trio.to_thread.run_sync(functools.partial(self.store.pin, added.addresses, root=added.link.root))
        self.pinned.add(added.link.root)
        await emit({"event": "added", "link": str(added.link), "chunks": added.chunks, "size": added.size})
        return added

    async def _add_replicated(self, add: Callable[..., AddResult], emit: Emit, replicas: int, put: Put) -> Json:
        """Add a file and push each chunk to its R closest nodes as soon as it is sealed (specs/network.md §7).

        The local add runs on a thread and hands every new chunk to the
        replication here (no second read, no second hash), waiting while
        ``PARALLEL_CHUNKS`` are in flight; the result comes once the file is
        durable here and every chunk was placed.  ``replicated`` events of
        chunks placed before ``added`` (which needs the root, sealed last) are
        held until it is out: at most one per chunk of the file.
        """
        send, recv = trio.open_memory_channel[tuple[bytes, bytes]](0)
        held: deque[ChunkPlaced] | None = deque()
        reports: list[ReplicationReport] = []

        async def on_chunk(placed: ChunkPlaced) -> None:
            if held is not None:
                held.append(placed)
            else:
                await emit(_replicated_event(placed))

        def on_sealed(address: bytes, chunk: bytearray) -> None:  # on the add's thread
            # One copy (the store's threads are writing the buffer): a PUT takes bytes.
            trio.from_thread.run(send.send, (address, bytes(chunk)))

        async def replicate() -> None:
            async with recv:
                reports.append(await replicate_chunks(recv, self.dialer, replicas=replicas, put=put,
                                                      on_chunk=on_chunk))

        failed: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replicate)
            try:
                async with send:  # closed when the add ends: the replication then drains
                    added = await self._add_locally(add, emit, on_sealed)
            except Exception as exc:  # raised out of the nursery, so it is not wrapped in a group
                failed = exc
                nursery.cancel_scope.cancel()
            else:
                while held:
                    await emit(_replicated_event(held.popleft()))
                held = None
        if failed is not None:
            raise failed
        report = reports[0]
        announced_to = await announce_root(self.dialer, added.link.root)
        return {"link": str(added.link), "root": added.link.root.hex(), "size": added.size,
                "chunks": report.chunks, "replicas_wanted": report.replicas_wanted,
                "replicas_confirmed": report.replicas_confirmed, "under_replicated": report.under_replicated,
                "announced_to": announced_to, "dht_lookups": report.dht_lookups,
                "failed_replicas": [failure_json(f) for f in report.failures]}

    async def _fetch(self, body: Json, emit: Emit, dest: Path | None, *, raw: bool = False) -> Json:
        link = _link_field(body, need_key=not raw)
        default_max = self.paid.payer.max_price_per_mib_get if self.paid is not None else 0
        max_price = _int_field(body, "max_price_per_mib", default_max, 0, 10**8)
        window = _int_field(body, "window", DEFAULT_WINDOW, 1, MAX_WINDOW)
        send, recv = trio.open_memory_channel[FetchProgress](1)

        def on_progress(p: FetchProgress) -> None:
            try:
                send.send_nowait(p)
            except trio.WouldBlock:
                pass  # a report is already waiting; the next one will be newer

        async def forward() -> None:
            async for p in recv:
                await emit(_progress_event(p))
                await trio.sleep(1 / PROGRESS_PER_SECOND)  # rate limit, not synchronisation

        paid = self.paid
        make_source = self.speeds.timed_source(free_source if paid is None else functools.partial(PaidSource.open, paid))
        resolver = DhtResolver(self.dialer, link.root, make_source=make_source)
        error: ControlError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            try:
                if raw:  # verify cap: every ciphertext chunk into the store, nothing decrypted
                    result = await fetch_raw(link.root, self.store, [], max_price_per_mib=max_price, window=window,
                                             resolver=resolver, on_progress=on_progress)
                else:
                    # A get keeps the plaintext, not the data chunks (specs/network.md §5); a pin keeps them.
                    result = await fetch_file(link, dest, [], max_price_per_mib=max_price, window=window,
                                              resolver=resolver, store=self.store, keep_chunks=dest is None,
                                              on_progress=on_progress)
            except FetchFailed as exc:
                error = ControlError(404, "not-found", str(exc))
            except (IntegrityError, ChunkNotFound) as exc:
                error = ControlError(422, "integrity", str(exc))
            finally:
                nursery.cancel_scope.cancel()
        if error is not None:  # raised out here so the nursery does not wrap it in a group
            raise error
        c = result.progress.chunks
        return {"path": str(result.path) if result.path else None, "size": result.size,
                "chunks_fetched": c.chunks_done, "local_chunks": result.progress.local_chunks,
                "bytes_fetched": c.bytes_done, "sats_spent": c.sats_spent, "sats_lost": c.sats_lost,
                "seconds": round(result.progress.elapsed, 3),
                "rate": round(result.progress.rate) if not math.isnan(result.progress.rate) else 0,
                "banned": [h.hex() for h in result.banned], "dht_lookups": resolver.lookups,
                **({"raw": True, "chunks": result.chunks, "data_chunks": result.data_chunks} if raw else {})}

    async def get(self, body: Json, emit: Emit) -> Json:
        """Body: ``link``, ``output`` (absolute path), ``max_price_per_mib``, ``window``.

        With ``raw`` true there is no ``output`` and no key is needed: the
        ciphertext chunks are fetched, verified and kept in the store.
        """
        if body.get("raw") is True:
            return await self._fetch(body, emit, None, raw=True)
        output = body.get("output")
        if not isinstance(output, str) or not Path(output).is_absolute():
            raise ControlError(400, "bad-argument", "output must be an absolute path")
        if "stripes" in body:
            return await self._fetch_striped(body, Path(output))
        return await self._fetch(body, emit, Path(output))

    def _counted_put(self, spent: list[int], planned: int = 0) -> Put:
        """The node's PUT (paid when the node pays), adding the sats it sends to ``spent[0]``.

        ``planned``: about how many bytes the operation means to store in all.
        Each paid request then says how many are still to come after it, so a
        host's channel is funded while its free allowance lasts
        (specs/payments.md §Channel recovery, "Funding ahead").
        """
        paid = self.paid
        left = [planned]

        async def counted_put(session: Session, address: bytes, data: bytes) -> object:
            if paid is None:
                return await free_put(session, address, data)
            left[0] = max(0, left[0] - len(data))
            reply, sats = await paid.request(session, Kind.PUT, address, data, more=left[0])
            spent[0] += sats
            return reply

        return counted_put

    def upkeep_timer(self, config: UpkeepConfig) -> UpkeepTimer:
        """The timer that audits, repairs and renews the k-of-n files owned here (specs/erasure.md §7.5)."""
        self.upkeep = UpkeepTimer(self.auditor, config, repair=self.repair_file,
                                  renew=self.renew_files if self.paid is not None else None)
        return self.upkeep

    async def repair_file(self, map_address: bytes) -> tuple[RepairReport, int]:
        """One upkeep round of a file (specs/erasure.md §8); (report, sats its PUTs cost), added to its cost.

        Raises:
            KeyError: no k-of-n file with this map is owned here.
            node.store.ChunkNotFound: the owner lost the file's chunks.
        """
        spent = [0]
        async with self._upkeep:
            report = await upkeep_file(self.auditor, map_address, self._counted_put(spent))
            record = self.erasure.load(map_address)
            if record is not None:
                self.erasure.save(add_spent(record, spent[0]))
        return report, spent[0]

    async def renew_files(self, now: int, budget: int, within: int) -> RenewalReport:
        """One renewal round (specs/erasure.md §9) within ``budget`` sats this month."""
        assert self.paid is not None
        async with self._upkeep:
            return await renew_files(self.auditor, self.paid, now=now, budget=budget, renew_ahead=within)

    async def repair(self, body: Json, emit: Emit) -> Json:
        """Body: ``stripes``: one upkeep round, audit every share then re-place the failed ones (specs/erasure.md §8)."""
        map_address = _map_field(body)
        try:
            # Through the timer when there is one: it draws its wait again for the shares re-placed.
            done = (await self.upkeep.repair_now(map_address) if self.upkeep is not None
                    else await self.repair_file(map_address))
            report, put_sats = cast(tuple[RepairReport, int], done)
        except KeyError:
            raise ControlError(404, "not-found", f"no k-of-n file with stripe map {map_address.hex()} is owned here") from None
        except ChunkNotFound as exc:
            raise ControlError(422, "integrity", f"the owner lost part of the file: {exc}") from None
        return {"failed_audits": sum(1 for a in report.audits if not a.passed),
                "repaired": [{"stripe": s, "share": i, "host": h.hex()} for s, i, h in report.repaired],
                "unrepaired": [{"stripe": s, "share": i} for s, i in report.unrepaired],
                "alive": list(report.alive), "sats_spent": put_sats + sum(a.sats for a in report.audits)}

    async def health(self, body: Json, emit: Emit) -> Json:
        """Body: optional ``root`` (hex prefix): per k-of-n file owned here, shares alive per stripe (recorded
        hosts not dropped), last audit, paid retention's end, cost so far (specs/erasure.md §7, §8)."""
        prefix = body.get("root", "")
        if not isinstance(prefix, str):
            raise ControlError(400, "bad-argument", "root must be a hex string")
        dropped = self.erasure.dropped()
        files = []
        for map_address in self.erasure.files():
            record = self.erasure.load(map_address)
            if record is None or not record.root.hex().startswith(prefix.lower()):
                continue
            files.append({"root": record.root.hex(), "stripes": map_address.hex(),
                          "alive": record.alive(dropped),
                          "last_audit": record.last_audit or None, "retained_until": record.retained_until or None,
                          "sats_spent": record.sats_spent})
        return {"files": files}

    async def renew(self, body: Json, emit: Emit) -> Json:
        """Body: ``max_spend_per_month`` (sats), optional ``within`` (seconds, default a week): renew every
        k-of-n file whose paid retention ends within ``within``, soonest first, within the budget; name the
        files at risk (specs/erasure.md §9)."""
        if self.paid is None:
            raise ControlError(409, "not-paying", "renewal pays hosts: this node runs without payments")
        budget = _int_field(body, "max_spend_per_month", 0, 0, 2**53)
        within = _int_field(body, "within", RENEW_AHEAD, 0, 10 * 365 * 24 * 3600)
        report = await self.renew_files(int(time.time()), budget, within)
        roots = {m: r.root.hex() for m in self.erasure.files() if (r := self.erasure.load(m)) is not None}
        return {"renewed": [roots.get(m, "") for m in report.renewed],
                "at_risk": [roots.get(m, "") for m in report.at_risk],
                "sats_spent": report.sats_spent, "spent_this_month": report.spent_this_month}

    async def audit(self, body: Json, emit: Emit) -> Json:
        """Body: ``stripes`` (a map address): audit every share of that k-of-n file now (specs/erasure.md §7)."""
        map_address = _map_field(body)
        try:
            results = await self.auditor.audit_file(map_address)
        except KeyError:
            raise ControlError(404, "not-found", f"no k-of-n file with stripe map {map_address.hex()} is owned here") from None
        except ChunkNotFound as exc:
            raise ControlError(422, "integrity", f"the owner lost part of the file: {exc}") from None
        return {"audits": [{"stripe": r.stripe, "share": r.share, "host": r.host.hex(), "passed": r.passed,
                            "reason": r.reason, "score": r.score, "sats": r.sats} for r in results],
                "dropped": sorted(h.hex() for h in self.erasure.dropped()), "sats_spent": sum(r.sats for r in results)}

    async def _fetch_striped(self, body: Json, dest: Path) -> Json:
        """``get`` of an erasure-coded file: ``stripes`` is its stripe map's address (specs/erasure.md §Reading)."""
        link = _link_field(body)
        map_address = _map_field(body)
        paid = self.paid
        make_source = free_source if paid is None else functools.partial(PaidSource.open, paid)
        try:
            got = await fetch_striped(link, map_address, dest, self.dialer, make_source=make_source, store=self.store)
        except NotEnoughShares as exc:
            raise ControlError(404, "not-found", str(exc)) from None
        except (StripeMapError, IntegrityError) as exc:
            raise ControlError(422, "integrity", str(exc)) from None
        return {"path": str(dest), "size": got.size, "shares_fetched": got.shares_fetched,
                "local_shares": got.local_shares, "sats_spent": got.sats_spent,
                "banned": [h.hex() for h in got.banned], "parity_stripes": got.decoded_stripes}

    async def pin(self, body: Json, emit: Emit) -> Json:
        """Body: ``link``, ``max_price_per_mib``, ``window``.  Fetch into the store and host it.

        A bare root (no key) is fetched as ciphertext through the verify cap.
        """
        link = _link_field(body, need_key=False)
        result = await self._fetch(body, emit, None, raw=link.key is None)
        announcement = await self.dialer.dht.announce_provider(dht_key(link.root), tcp_port=self.dialer.transport.port)
        await trio.to_thread.run_sync(pin_file, self.store, link)  # durable: survives restarts
        self.pinned.add(link.root)
        return {**result, "announced_to": len(announcement.stored_at)}

    async def announce_pinned(self) -> int:
        """Announce ourselves as provider of every pinned root (at start-up); return how many."""
        announced = 0
        for root in sorted(self.pinned):
            try:
                await self.dialer.dht.announce_provider(dht_key(root), tcp_port=self.dialer.transport.port)
            except Exception as exc:  # one failed announcement must not stop the others; republish retries
                log.warning("re-announcing pinned root %s failed: %s", root.hex(), exc)
                continue
            announced += 1
        log.info("re-announced %d pinned roots", announced)
        self.pins_announced.set()
        return announced


def contact_json(contact: Contact, seen_ago: float | None) -> Json:
    """One routing-table entry; ``seen_ago_s`` is None when the source keeps no time (the file)."""
    return {"node_id": contact.node_id.hex(), "host": contact.host, "port": contact.port, "mu": contact.is_mu,
            "seen_ago_s": None if seen_ago is None else round(seen_ago, 3)}


def peers_report(node_id: bytes, entries: Iterable[tuple[Contact, float | None]], *, live: bool) -> Json:
    """The ``mu peers --json`` object: our node id, whether it came from the running node, the peers."""
    return {"node_id": node_id.hex(), "live": live, "peers": [contact_json(c, ago) for c, ago in entries]}


def register_report_routes(control: ControlServer, dht: DhtNode, ledger: Ledger) -> None:
    """Serve ``GET /v1/peers`` (the live routing table) and ``GET /v1/earnings`` (the open ledger)."""

    async def peers(body: Json) -> Json:
        now = dht.now()  # the table's last_seen times are on the node's trio clock
        return peers_report(dht.node_id, ((c, max(0.0, now - seen)) for c, seen in dht.table.entries()), live=True)

    async def earnings(body: Json) -> Json:
        # SQLite reads block: a worker thread (the ledger serialises its reads with a lock).
        return await trio.to_thread.run_sync(ledger.earnings)

    control.route("GET", "peers", peers, params={})
    control.route("GET", "earnings", earnings, params={})
