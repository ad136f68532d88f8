"""Answers to incoming RPCs (specs/dht.md §4.3 Messages).

The four RPCs of the ``kademlia`` package are answered exactly as it expects
(``ping`` returns our ID, ``store`` returns a bool, ``find_node`` a list of
``[id, ip, port]``, ``find_value`` ``{"value": v}`` or that list); mu's RPCs
add signed records and announce tokens.  Bad requests are logged and either
dropped (malformed) or answered with a refusal (over a limit, bad record), and
never reach the tables.  Handlers are synchronous: nothing here waits.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import cast

from node.dht._neighbours import Neighbours
from protocol.kademlia.ids import K, Contact, KademliaError
from protocol.kademlia.mutable import MutableRecord, MutableStore
from protocol.kademlia.records import ContactRecord, ProviderRecord, check_token, make_token
from protocol.kademlia.storage import ProviderStore, ValueStore
from protocol.kademlia.wire import (
    FIND_NODE,
    FIND_VALUE,
    MU_ANNOUNCE,
    MU_CONTACT,
    MU_GET_PROVIDERS,
    MU_GET_RECORD,
    MU_PUT_RECORD,
    PING,
    STORE,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    check_request,
    check_value,
    encode_response,
)

log = logging.getLogger("mu.dht")

#: Bytes of provider records one ``mu_get_providers`` reply carries, so the
#: reply stays under the 8 KiB datagram bound next to k contacts (§4.3).
MAX_PROVIDER_BYTES_PER_REPLY = 5120
#: Bytes of one announce-token secret.
TOKEN_SECRET_SIZE = 32


class AnnounceTokens:
    """The secrets announce tokens are made from: the current one and the one before.

    A token handed out under the current secret still verifies after one
    rotation, not after two (specs/dht.md §7.1 Provider record).
    """

    def __init__(self) -> None:
        self.secrets = [secrets.token_bytes(TOKEN_SECRET_SIZE), secrets.token_bytes(TOKEN_SECRET_SIZE)]

    def rotate(self) -> None:
        self.secrets = [secrets.token_bytes(TOKEN_SECRET_SIZE), self.secrets[0]]

    def make(self, host: str) -> bytes:
        return make_token(self.secrets[0], host)

    def check(self, token: object, host: str) -> bool:
        return check_token(token, host, self.secrets)


class RequestHandlers:
    """Turns one request datagram into one reply datagram (or none).

    Args:
        node_id: our ID (a request claiming it is dropped).
        contact_record: our signed contact record, the ``mu_contact`` answer.
        neighbours: the routing table, which answers ``find_node``; senders of well-formed
            requests are pinged through it.
        values: plain kademlia values (``store``, ``find_value``).
        providers: provider records (``mu_announce``, ``mu_get_providers``).
        records: mutable records (``mu_put_record``, ``mu_get_record``).
        tokens: the announce-token secrets.
        wall_clock: Unix time, for record expiry.
    """

    def __init__(self, *, node_id: bytes, contact_record: ContactRecord, neighbours: Neighbours,
                 values: ValueStore, providers: ProviderStore, records: MutableStore,
                 tokens: AnnounceTokens, wall_clock: Callable[[], float]) -> None:
        self.node_id = node_id
        self.contact_record = contact_record
        self.neighbours = neighbours
        self.values = values
        self.providers = providers
        self.records = records
        self.tokens = tokens
        self.wall_clock = wall_clock

    def handle(self, request: Request, address: tuple[str, int]) -> bytes | None:
        """Answer ``request`` from ``address``; None means send nothing."""
        host, port = address
        try:
            sender = check_request(request)
            if sender == self.node_id:
                raise RemoteProtocolError(ErrorCode.BAD_ARGUMENTS, "sender claims our own node id")
            contact = Contact(sender, host, port)
        except (RemoteProtocolError, KademliaError) as exc:
            log.warning("dropping %r request from %s:%d: %s", request.name, host, port, exc)
            return None
        try:
            value = self._dispatch(request, contact)
        except RemoteProtocolError as exc:
            log.warning("refusing %s from %s:%d: %s", request.name, host, port, exc)
            value = False if request.name == STORE else exc.code.value
        # Only a well-formed request gets its sender pinged, and only an answer to
        # that ping puts it in the table (§5.2 Adding a contact).
        self.neighbours.asked_by(contact)
        try:
            return encode_response(request.msg_id, value)
        except LocalProtocolError as exc:
            log.error("reply to %s too large: %s", request.name, exc)
            return None

    def _dispatch(self, request: Request, sender: Contact) -> object:
        args = request.args
        # check_request has made args[1], when present, a 20-byte key.
        key = cast(bytes, args[1]) if len(args) > 1 else b""
        if request.name == PING:
            return self.node_id
        if request.name == FIND_NODE:
            return self._closest(key, sender)
        if request.name == FIND_VALUE:
            value = self.values.get(key, self.wall_clock())
            return {"value": value} if value is not None else self._closest(key, sender)
        if request.name == STORE:
            value = check_value(args[2])
            self.values.put(key, value, sender.host, self.wall_clock())
            log.debug("stored %s for %s", key.hex(), sender.host)
            return True
        if request.name == MU_CONTACT:
            return self.contact_record.serialize()
        if request.name == MU_GET_PROVIDERS:
            return self._get_providers(key, sender)
        if request.name == MU_ANNOUNCE:
            return self._announce(key, args[2], args[3], sender)
        if request.name == MU_GET_RECORD:
            record = self.records.get(key, self.wall_clock())
            return {"token": self.tokens.make(sender.host), "record": record.serialize() if record else None,
                    "nodes": self._closest(key, sender)}
        if request.name == MU_PUT_RECORD:
            return self._put_record(key, args[2], args[3], sender)
        raise RemoteProtocolError(ErrorCode.UNKNOWN_RPC, request.name)

    def _closest(self, key: bytes, sender: Contact) -> list[object]:
        return [c.to_wire() for c in self.neighbours.table.closest(key, K, exclude=sender.node_id)]

    def _get_providers(self, key: bytes, sender: Contact) -> dict[str, object]:
        records: list[bytes] = []
        budget = MAX_PROVIDER_BYTES_PER_REPLY
        for record in self.providers.get(key, self.wall_clock()):
            data = record.serialize()
            if len(data) > budget:
                break
            records.append(data)
            budget -= len(data)
        return {
            "token": self.tokens.make(sender.host),
            "providers": records,
            "nodes": self._closest(key, sender),
        }

    def _announce(self, key: bytes, token: object, data: object, sender: Contact) -> bool:
        if not self.tokens.check(token, sender.host):
            raise RemoteProtocolError(ErrorCode.BAD_TOKEN, "announce token missing, stale or for another IP")
        record = ProviderRecord.parse(data, now=self.wall_clock())
        if record.key != key:
            raise RemoteProtocolError(ErrorCode.BAD_ARGUMENTS, "record is for another key")
        self.providers.add(record, sender.host, self.wall_clock())
        log.debug("provider %s for %s announced by %s", record.node_id.hex(), key.hex(), sender.host)
        return True

    def _put_record(self, key: bytes, token: object, data: object, sender: Contact) -> bool:
        """Store a mutable record (specs/dht.md §7.3 Mutable record); each refusal has its own code."""
        # The token proves the sender receives at its source IP, so a spoofed
        # source cannot spend another IP's share of the store (§12 Store floods).
        if not self.tokens.check(token, sender.host):
            raise RemoteProtocolError(ErrorCode.BAD_TOKEN, "put token missing, stale or for another IP")
        record = MutableRecord.parse(data)
        if record.key != key:
            raise RemoteProtocolError(ErrorCode.KEY_MISMATCH, "record's public key does not hash to the request key")
        if self.records.put(record, sender.host, self.wall_clock()):
            log.debug("mutable record %s seq %d stored by %s", key.hex(), record.seq, sender.host)
        return True
