"""Answers to incoming RPCs (specs/dht.md §4.3).

The four RPCs of the ``kademlia`` package are answered exactly as it expects
(``ping`` returns our ID, ``store`` returns a bool, ``find_node`` a list of
``[id, ip, port]``, ``find_value`` ``{"value": v}`` or that list); mu's RPCs
add signed records and announce tokens.  Bad requests are logged and either
dropped (malformed) or answered with a refusal (over a limit, bad record), and
never reach the tables.  Handlers are synchronous: nothing here waits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

from protocol.kademlia.ids import K, Contact, KademliaError
from protocol.kademlia.records import ProviderRecord, check_token, make_token
from protocol.kademlia.wire import (
    FIND_NODE,
    FIND_VALUE,
    MU_ANNOUNCE,
    MU_CONTACT,
    MU_GET_PROVIDERS,
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

if TYPE_CHECKING:
    from node.dht._service import DhtNode

log = logging.getLogger("mu.dht")

#: Bytes of provider records one ``mu_get_providers`` reply carries, so the
#: reply stays under the 8 KiB datagram bound next to k contacts (§4.3).
MAX_PROVIDER_BYTES_PER_REPLY = 5120


class RequestHandlers:
    """Turns one request datagram into one reply datagram (or none)."""

    def __init__(self, node: DhtNode) -> None:
        self.node = node

    def handle(self, request: Request, address: tuple[str, int]) -> bytes | None:
        """Answer ``request`` from ``address``; None means send nothing."""
        host, port = address
        try:
            sender = check_request(request)
            if sender == self.node.node_id:
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
        # Only a well-formed request adds its sender to the table (§5.2).
        self.node.heard_from(contact)
        try:
            return encode_response(request.msg_id, value)
        except LocalProtocolError as exc:
            log.error("reply to %s too large: %s", request.name, exc)
            return None

    def _dispatch(self, request: Request, sender: Contact) -> object:
        node = self.node
        args = request.args
        # check_request has made args[1], when present, a 20-byte key.
        key = cast(bytes, args[1]) if len(args) > 1 else b""
        if request.name == PING:
            return node.node_id
        if request.name == FIND_NODE:
            return self._closest(key, sender)
        if request.name == FIND_VALUE:
            value = node.values.get(key, node.wall_now())
            return {"value": value} if value is not None else self._closest(key, sender)
        if request.name == STORE:
            value = check_value(args[2])
            node.values.put(key, value, sender.host, node.wall_now())
            log.debug("stored %s for %s", key.hex(), sender.host)
            return True
        if request.name == MU_CONTACT:
            return node.contact_record.serialize()
        if request.name == MU_GET_PROVIDERS:
            return self._get_providers(key, sender)
        if request.name == MU_ANNOUNCE:
            return self._announce(key, args[2], args[3], sender)
        raise RemoteProtocolError(ErrorCode.UNKNOWN_RPC, request.name)

    def _closest(self, key: bytes, sender: Contact) -> list[object]:
        return [c.to_wire() for c in self.node.table.closest(key, K, exclude=sender.node_id)]

    def _get_providers(self, key: bytes, sender: Contact) -> dict[str, object]:
        node = self.node
        records: list[bytes] = []
        budget = MAX_PROVIDER_BYTES_PER_REPLY
        for record in node.providers.get(key, node.wall_now()):
            data = record.serialize()
            if len(data) > budget:
                break
            records.append(data)
            budget -= len(data)
        return {
            "token": make_token(node.token_secrets[0], sender.host),
            "providers": records,
            "nodes": self._closest(key, sender),
        }

    def _announce(self, key: bytes, token: object, data: object, sender: Contact) -> bool:
        node = self.node
        if not check_token(token, sender.host, node.token_secrets):
            raise RemoteProtocolError(ErrorCode.BAD_TOKEN, "announce token missing, stale or for another IP")
        record = ProviderRecord.parse(data, now=node.wall_now())
        if record.key != key:
            raise RemoteProtocolError(ErrorCode.BAD_ARGUMENTS, "record is for another key")
        node.providers.add(record, sender.host, node.wall_now())
        log.debug("provider %s for %s announced by %s", record.node_id.hex(), key.hex(), sender.host)
        return True
