"""The owner's side of erasure-coded files: where each share went, host scores, audits
(specs/erasure.md §7 Audits).

:class:`ErasureBook` keeps, durably under ``DATA_DIR/erasure/``, the host of
every share of every file this node stored k-of-n (one JSON file per stripe
map) and each host's audit score (``scores.json``); files are replaced
atomically, so a crash leaves the old or the new version.

:class:`Auditor` audits the recorded host of a share: it rebuilds the share
from the chunks it kept (specs/erasure.md §7.1), sends a fresh challenge and
checks the proof.  A refusal, a wrong proof, a dead host or no answer in
``AUDIT_TIMEOUT`` is a failed audit; the score moves by
:func:`protocol.erasure.next_score`, and a host below ``DROP_BELOW`` is not
used again (placement skips it, audits skip it).  Only a proof that checked
is paid for, by the same challenge sent again charged (specs/erasure.md §7.4
Paid audits): a host that fails is paid nothing for the audit.  One audit
at a time per host, as a host answers one unpaid probe per owner at a time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from node.exchange.paying import PaidPeers
from node.files.locate import PeerDialer
from node.store import ChunkNotFound, ChunkStore
from node.transport import RequestError, Session, TransportError
from protocol.payments import PaymentError, PriceTooHigh
from protocol.erasure import (
    START_SCORE,
    AuditChallenge,
    StripeMap,
    audit_passes,
    encode_stripe,
    is_dropped,
    make_challenge,
    next_score,
    share_address,
)
from protocol.wire import Audit, AuditProof, ErrorCode

log = logging.getLogger("mu.audit")

ERASURE_DIR = "erasure"
SCORES_FILE = "scores.json"
AUDIT_TIMEOUT = 10.0
# The charged audit may first wait for a channel to be funded and confirmed (node.exchange.paying bounds each
# of those waits by CONFIRM_TIMEOUT, 120 s).
PAID_AUDIT_TIMEOUT = 300.0
# Hosts with a score kept at most: beyond it the best-scored are forgotten first (they start afresh).
MAX_SCORED_HOSTS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareAudit:
    stripe: int
    share: int
    host: bytes
    passed: bool
    reason: str
    score: int  # the host's score after this audit
    sats: int = 0  # paid for this audit (only a passed one is paid)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRecord:
    """What the owner knows of one k-of-n file beyond its stripe map."""

    map_address: bytes
    root: bytes
    hosts: tuple[tuple[bytes, ...], ...]  # per stripe, the host of each share (b"" when none)
    last_audit: float = 0.0  # unix seconds, 0 before the first
    sats_spent: int = 0  # PUTs, repairs and renewals paid for this file so far
    retained_until: int = 0  # unix seconds the shares are paid for (specs/erasure.md §9 Renewal)
    # (stripe, index) of the zero blocks completing the last stripe: no shares, never placed (§3); a record
    # written before this was kept names hosts for them, and they are then audited as shares.
    padding: frozenset[tuple[int, int]] = frozenset()

    def missing(self, dropped: set[bytes]) -> set[tuple[int, int]]:
        """(stripe, index) of every share with no host, or a dropped one."""
        return {(s, i) for s, hosts in enumerate(self.hosts) for i, host in enumerate(hosts)
                if (s, i) not in self.padding and (not host or host in dropped)}

    def alive(self, dropped: set[bytes]) -> list[int]:
        """Per stripe, the shares a reader can count on: those on a host not dropped, and the zero blocks."""
        return [sum(1 for i, host in enumerate(hosts) if (s, i) in self.padding or (host and host not in dropped))
                for s, hosts in enumerate(self.hosts)]


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


class ErasureBook:
    """Durable placements and host scores of the k-of-n files this node owns."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / ERASURE_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / SCORES_FILE
        raw = json.loads(path.read_text()) if path.exists() else {}
        self.scores: dict[bytes, int] = {bytes.fromhex(k): int(v) for k, v in raw.items()}

    def _path(self, map_address: bytes) -> Path:
        return self.dir / f"{map_address.hex()}.json"

    def save(self, record: FileRecord) -> None:
        _write_json(self._path(record.map_address), {
            "root": record.root.hex(), "hosts": [[h.hex() for h in s] for s in record.hosts],
            "last_audit": record.last_audit, "sats_spent": record.sats_spent,
            "retained_until": record.retained_until, "padding": sorted([s, i] for s, i in record.padding)})

    def load(self, map_address: bytes) -> FileRecord | None:
        path = self._path(map_address)
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return FileRecord(map_address=map_address, root=bytes.fromhex(raw["root"]),
                          hosts=tuple(tuple(bytes.fromhex(h) for h in s) for s in raw["hosts"]),
                          last_audit=float(raw["last_audit"]), sats_spent=int(raw["sats_spent"]),
                          retained_until=int(raw.get("retained_until", 0)),
                          padding=frozenset((int(s), int(i)) for s, i in raw.get("padding", ())))

    def files(self) -> list[bytes]:
        # One file per stripe map, named by its address; scores.json and spent.json live beside them.
        return sorted(bytes.fromhex(p.stem) for p in self.dir.glob("*.json")
                      if len(p.stem) == 64 and all(c in "0123456789abcdef" for c in p.stem))

    def score(self, host: bytes) -> int:
        return self.scores.get(host, START_SCORE)

    def dropped(self) -> set[bytes]:
        return {host for host, score in self.scores.items() if is_dropped(score)}

    def note(self, host: bytes, passed: bool) -> int:
        score = self.scores[host] = next_score(self.score(host), passed)
        if len(self.scores) > MAX_SCORED_HOSTS:
            best = max((h for h in self.scores if h != host), key=lambda h: self.scores[h])
            del self.scores[best]
        _write_json(self.dir / SCORES_FILE, {h.hex(): s for h, s in self.scores.items()})
        return score


def rebuild_shares(store: ChunkStore, stripe_map: StripeMap, index: int) -> list[bytes]:
    """Every share of stripe ``index``, re-encoded from the chunks in ``store`` (the owner kept them).

    Raises:
        node.store.ChunkNotFound: a chunk of the stripe is gone from the store.
    """
    stripe = stripe_map.stripes[index]
    chunks = [(address, store.get(address)) for address, _ in stripe.chunks]
    _, shares = encode_stripe(chunks, stripe_map.k, stripe_map.n)
    return shares


# Rebuilds a stripe's shares from the network when the owner's chunks are gone: (map address, map, stripe)
# -> (the n shares or None, sats paid).
NetworkShares = Callable[[bytes, StripeMap, int], Awaitable[tuple[list[bytes] | None, int]]]


class Auditor:
    """Audits the shares of the files in an :class:`ErasureBook`, for the node that owns them."""

    def __init__(self, store: ChunkStore, dialer: PeerDialer, book: ErasureBook, paid: PaidPeers | None = None, *,
                 network_shares: NetworkShares | None = None,
                 random_bytes: Callable[[int], bytes] = os.urandom, wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.dialer = dialer
        self.book = book
        self.paid = paid  # None: audits go unpaid (a node without payments)
        self.network_shares = network_shares
        self.random_bytes = random_bytes
        self.wall_clock = wall_clock
        self._hosts: dict[bytes, trio.Lock] = {}  # one audit at a time per host

    def stripe_map(self, map_address: bytes) -> StripeMap:
        return StripeMap.parse(self.store.get(map_address))

    async def shares(self, map_address: bytes, stripe_map: StripeMap, index: int) -> list[bytes]:
        """Every share of stripe ``index``: re-encoded from the chunks kept here, else rebuilt from any k
        shares on live hosts (paid GETs, added to the file's cost: specs/erasure.md §8 Repair).

        Raises:
            node.store.ChunkNotFound: the chunks are gone here and fewer than k shares could be had.
        """
        try:
            return await trio.to_thread.run_sync(rebuild_shares, self.store, stripe_map, index)
        except ChunkNotFound:
            if self.network_shares is None:
                raise
        log.info("stripe %d of %s: chunks not kept here, rebuilding it from the network", index, map_address.hex())
        shares, sats = await self.network_shares(map_address, stripe_map, index)
        if sats:
            record = self.book.load(map_address)
            if record is not None:
                self.book.save(replace(record, sats_spent=record.sats_spent + sats))
        if shares is None:
            raise ChunkNotFound(f"stripe {index} of {map_address.hex()}: not kept here, fewer than k shares on the network")
        return shares

    async def audit_share(self, host: bytes, share: bytes) -> tuple[bool, str, int]:
        """Challenge ``host`` over ``share`` (the bytes the owner rebuilt), then pay if the proof checks;
        (passed, why not, sats paid)."""
        challenge = make_challenge(share_address(share), len(share), self.random_bytes(40))
        session = await self.dialer.session(host)
        if session is None:
            return False, "unreachable", 0
        async with self._hosts.setdefault(host, trio.Lock()):
            try:
                with trio.fail_after(AUDIT_TIMEOUT):
                    reply = await session.request(Audit(request_id=0, address=challenge.address, nonce=challenge.nonce,
                                                        offset=challenge.offset, length=challenge.length))
            except trio.TooSlowError:
                return False, f"no answer within {AUDIT_TIMEOUT:g} s", 0
            except RequestError as exc:
                if exc.code == ErrorCode.INSUFFICIENT_PAYMENT and self.paid is not None:
                    # The host holds an earlier probe of ours unpaid (a payment that failed, a restart
                    # between probe and payment): this audit is paid first, then checked.
                    return await self._pay(session, challenge, share)
                return False, f"refused: {exc}", 0
            except TransportError as exc:
                return False, f"session failed: {exc}", 0
            if not isinstance(reply, AuditProof):
                return False, f"answered with {type(reply).__name__}", 0
            if not audit_passes(challenge, share, bytes(reply.proof)):
                return False, "wrong proof", 0
            if self.paid is None:
                return True, "", 0
            return await self._pay(session, challenge, share)

    async def _pay(self, session: Session, challenge: AuditChallenge, share: bytes) -> tuple[bool, str, int]:
        """The charged audit of a probe that passed (specs/erasure.md §7.4 Paid audits).

        Its proof must check again (the host was paid for it).  A payment
        that fails leaves the audit passed (the host proved it holds the
        share) and the host's probe unpaid: it refuses our next probe, and
        that audit is then paid before it is checked.
        """
        assert self.paid is not None
        try:
            with trio.fail_after(PAID_AUDIT_TIMEOUT):
                proof, sats = await self.paid.audit(session, challenge)
        except (trio.TooSlowError, RequestError, TransportError, PaymentError, PriceTooHigh) as exc:
            log.warning("audit of %s on %s passed, but paying for it failed: %s", challenge.address.hex(),
                        session.peer_node_id.hex(), exc)
            return True, f"unpaid: {exc}", 0
        if not audit_passes(challenge, share, proof):
            return False, "wrong proof on the charged audit", sats
        return True, "", sats

    def audited_shares(self) -> list[tuple[bytes, int, int]]:
        """(map address, stripe, share) of every share of every file here with a host that is not dropped."""
        dropped = self.book.dropped()
        found = []
        for map_address in self.book.files():
            record = self.book.load(map_address)
            if record is not None:
                found += [(map_address, s, i) for s, hosts in enumerate(record.hosts)
                          for i, host in enumerate(hosts) if host and host not in dropped]
        return found

    async def audit_one(self, map_address: bytes, stripe: int, share: int) -> ShareAudit:
        """Audit one share at its recorded host (the upkeep timer's audits, specs/erasure.md §7.5).

        Raises:
            KeyError: no such file, or the share has no host.
            node.store.ChunkNotFound: the owner lost the file's chunks or its map.
        """
        record = self.book.load(map_address)
        if record is None or not record.hosts[stripe][share]:
            raise KeyError(f"{map_address.hex()} {stripe}/{share}")
        host = record.hosts[stripe][share]
        stripe_map = await trio.to_thread.run_sync(self.stripe_map, map_address)
        shares = await self.shares(map_address, stripe_map, stripe)
        passed, reason, sats = await self.audit_share(host, shares[share])
        score = self.book.note(host, passed)
        if not passed:
            log.warning("audit of share %d/%d on %s failed: %s", stripe, share, host.hex(), reason)
        fresh = self.book.load(map_address) or record
        self.book.save(replace(fresh, last_audit=self.wall_clock(), sats_spent=fresh.sats_spent + sats))
        return ShareAudit(stripe=stripe, share=share, host=host, passed=passed, reason=reason, score=score, sats=sats)

    async def audit_file(self, map_address: bytes) -> list[ShareAudit]:
        """Audit every share of the file at its recorded host (dropped hosts are not asked: failed).

        Raises:
            KeyError: this node does not own a k-of-n file with that map.
            node.store.ChunkNotFound: the owner lost the file's chunks or its map.
        """
        record = self.book.load(map_address)
        if record is None:
            raise KeyError(map_address.hex())
        stripe_map = await trio.to_thread.run_sync(self.stripe_map, map_address)
        results: list[ShareAudit] = []
        dropped = self.book.dropped()
        for index, hosts in enumerate(record.hosts):
            shares = await self.shares(map_address, stripe_map, index)
            outcome: dict[int, tuple[bool, str, int]] = {}

            async def one(i: int, host: bytes) -> None:
                outcome[i] = await self.audit_share(host, shares[i])

            async with trio.open_nursery() as nursery:
                for i, host in enumerate(hosts):
                    if host and host not in dropped:
                        nursery.start_soon(one, i, host)
            for i, host in enumerate(hosts):
                if not host:
                    continue
                passed, reason, sats = outcome.get(i, (False, "host dropped", 0))
                score = self.book.note(host, passed) if i in outcome else self.book.score(host)
                if not passed:
                    log.warning("audit of share %d/%d on %s failed: %s", index, i, host.hex(), reason)
                results.append(ShareAudit(stripe=index, share=i, host=host, passed=passed, reason=reason, score=score,
                                          sats=sats))
        fresh = self.book.load(map_address) or record
        self.book.save(replace(fresh, last_audit=self.wall_clock(),
                               sats_spent=fresh.sats_spent + sum(r.sats for r in results)))
        return results

