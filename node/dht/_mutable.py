"""Publishing and resolving signed mutable records (specs/dht.md §7.3 Mutable record).

Both are one iterative lookup of the record's key with ``mu_get_record``,
whose replies carry a put token, the record the responder holds (if any) and
closer contacts.  ``publish`` then sends ``mu_put_record`` to the k closest
responders; ``resolve`` keeps the highest valid sequence among all replies
and writes it back to those of the k closest that answered with an older
record or none (Kademlia §2.3 caching, BEP 44), which is how a node that
joined near the key since the last publish learns the record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from node.dht._ops import DhtOps
from node.dht._rpc import RpcClient
from protocol.kademlia.ids import Contact
from protocol.kademlia.mutable import MutableRecord, MutableStore, mutable_key
from protocol.kademlia.wire import MU_GET_RECORD, MU_PUT_RECORD, ErrorCode, RemoteProtocolError, parse_contacts

log = logging.getLogger("mu.dht")

#: Records this node republishes for their publishers (specs/dht.md §2).
MAX_OWN_MUTABLE_RECORDS = 1024
#: Seconds between republishes of a record we published (BEP 44: hourly).
MUTABLE_REPUBLISH_INTERVAL = 3600.0


@dataclass(slots=True)
class _Published:
    record: MutableRecord
    published_at: float


@dataclass(slots=True)
class _Reply:
    contact: Contact
    token: bytes
    record: MutableRecord | None


class MutableOps:
    """Mutable-record operations for one ``DhtNode``.

    Args:
        ops: runs the lookups.
        rpc: sends the puts.
        records: the local mutable store (our own and resolved records go there too).
        bound_host: the source IP our own records are counted under locally.
        wall_clock: Unix time, for republish and store lifetimes.
    """

    def __init__(self, *, ops: DhtOps, rpc: RpcClient, records: MutableStore, bound_host: str,
                 wall_clock: Callable[[], float]) -> None:
        self.ops = ops
        self.rpc = rpc
        self.records = records
        self.bound_host = bound_host
        self.wall_clock = wall_clock
        self._published: dict[bytes, _Published] = {}

    async def publish(self, record: MutableRecord) -> int:
        """Store ``record`` on the k closest nodes that answer; return how many took it.

        It is kept locally and republished every ``MUTABLE_REPUBLISH_INTERVAL``
        until ``withdraw`` or a newer record of the same key is published.

        Raises:
            ValueError: the record does not verify, or this node already
                republishes ``MAX_OWN_MUTABLE_RECORDS`` other keys.
        """
        if not record.verify():
            raise ValueError("mutable record does not verify")
        key = record.key
        if key not in self._published and len(self._published) >= MAX_OWN_MUTABLE_RECORDS:
            raise ValueError(f"already publishing {MAX_OWN_MUTABLE_RECORDS} mutable records")
        held = self._published.get(key)
        if held is None or record.seq >= held.record.seq:
            self._published[key] = _Published(record, self.wall_clock())
        self._keep(record)
        replies = await self._search(key)
        return await self._put_all(record, replies)

    def withdraw(self, public_key: bytes) -> None:
        """Stop republishing the record of ``public_key`` (copies out there expire on their own)."""
        self._published.pop(mutable_key(public_key), None)

    async def republish(self) -> int:
        """Publish again the records last published over ``MUTABLE_REPUBLISH_INTERVAL`` ago."""
        now = self.wall_clock()
        due = [p.record for p in self._published.values() if now - p.published_at >= MUTABLE_REPUBLISH_INTERVAL]
        for record in due:
            await self.publish(record)
        return len(due)

    async def resolve(self, public_key: bytes) -> MutableRecord | None:
        """The record with the highest valid sequence among ours and the network's, or None.

        The winner is written back to the k closest responders that answered
        with an older record or none.
        """
        key = mutable_key(public_key)
        replies = await self._search(key)
        candidates = [r.record for r in replies if r.record is not None]
        local = self.records.get(key, self.wall_clock())
        if local is not None:
            candidates.append(local)
        if not candidates:
            return None
        # Equal sequences with different values can only come from the key's
        # holder signing twice; every reader picks the same one.
        best = max(candidates, key=lambda r: (r.seq, r.value))
        self._keep(best)
        stale = [r for r in replies if r.record is None or r.record.seq < best.seq]
        if stale:
            written = await self._put_all(best, stale)
            log.debug("resolve %s: wrote seq %d back to %d of %d nodes", key.hex(), best.seq, written, len(stale))
        return best

    def _keep(self, record: MutableRecord) -> None:
        try:
            self.records.put(record, self.bound_host, self.wall_clock())
        except RemoteProtocolError as exc:
            # Our own store holds a newer one, or is full: the network copies still count.
            log.info("not keeping mutable record %s locally: %s", record.key.hex(), exc)

    async def _search(self, key: bytes) -> list[_Reply]:
        """Look up ``key`` with ``mu_get_record``; the replies of the k closest responders, nearest first."""
        replies: dict[bytes, _Reply] = {}

        def collect(contact: Contact, value: object) -> list[Contact]:
            nodes, data, token = _parse_record_reply(value)
            record = None
            if data is not None:
                try:
                    record = MutableRecord.parse(data)
                    if record.key != key:
                        raise RemoteProtocolError(ErrorCode.KEY_MISMATCH, "record for another key")
                except RemoteProtocolError as exc:
                    log.warning("dropping mutable record from %s:%d: %s", contact.host, contact.port, exc)
                    record = None
            replies[contact.node_id] = _Reply(contact, token, record)
            return nodes

        lookup = await self.ops.run_lookup(key, MU_GET_RECORD, on_reply=collect)
        return [replies[c.node_id] for c in lookup.result() if c.node_id in replies]

    async def _put_all(self, record: MutableRecord, targets: list[_Reply]) -> int:
        stored = 0
        data = record.serialize()

        async def put(reply: _Reply) -> None:
            nonlocal stored
            contact = reply.contact
            try:
                answer = await self.rpc.call(contact.address, MU_PUT_RECORD,
                                             [self.ops.node_id, record.key, reply.token, data])
            except Exception as exc:  # NoReply, and anything the socket throws
                log.info("put to %s:%d failed: %s", contact.host, contact.port, exc)
                return
            if answer is True:
                stored += 1
            else:
                log.warning("%s:%d refused mutable record seq %d: %r", contact.host, contact.port, record.seq, answer)

        async with trio.open_nursery() as nursery:
            for reply in targets:
                nursery.start_soon(put, reply)
        return stored


def _parse_record_reply(value: object) -> tuple[list[Contact], object | None, bytes]:
    """A ``mu_get_record`` reply: ``{"token", "record", "nodes"}``."""
    if not isinstance(value, dict) or set(value) != {"token", "record", "nodes"}:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "mu_get_record reply is not {token, record, nodes}")
    token = value["token"]
    if not isinstance(token, bytes):
        raise RemoteProtocolError(ErrorCode.MALFORMED, "mu_get_record token malformed")
    return parse_contacts(value["nodes"]), value["record"], token
