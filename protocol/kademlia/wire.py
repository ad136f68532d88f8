"""rpcudp datagrams and the RPC argument shapes (specs/dht.md §4).

The ``kademlia`` package frames every RPC as one UDP datagram (rpcudp 5):

    type (1 byte: 0x00 request, 0x01 response) | message id (20 bytes) | msgpack body

A request body is ``[name, [args...]]``; a response body is the bare return
value.  The body is at most 8 KiB.  This module encodes and decodes those
datagrams and validates the arguments and replies of each RPC so that the
service only ever sees well-typed values.  Decoding never trusts a length:
msgpack's own limits are set to the datagram bound before anything is built.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from protocol.identity import NODE_ID_SIZE
from protocol.kademlia.ids import K, Contact, KademliaError, check_id

#: Longest msgpack body rpcudp accepts (rpcudp ``MalformedMessage`` bound).
MAX_BODY_SIZE = 8192
#: Longest datagram: type byte, message id, body.
MAX_DATAGRAM_SIZE = 1 + NODE_ID_SIZE + MAX_BODY_SIZE
MESSAGE_ID_SIZE = 20
TYPE_REQUEST = 0x00
TYPE_RESPONSE = 0x01
#: Longest packed value a ``store`` may carry (specs/dht.md §8).
MAX_VALUE_SIZE = 4096
#: Longest RPC name.
MAX_NAME_LENGTH = 32

# RPC names: the kademlia package's four, plus mu's (specs/dht.md §4.3).
PING = "ping"
STORE = "store"
FIND_NODE = "find_node"
FIND_VALUE = "find_value"
MU_CONTACT = "mu_contact"
MU_GET_PROVIDERS = "mu_get_providers"
MU_ANNOUNCE = "mu_announce"
MU_GET_RECORD = "mu_get_record"
MU_PUT_RECORD = "mu_put_record"


class ErrorCode(enum.Enum):
    """Why a datagram, request or record was refused (specs/dht.md §9)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNKNOWN_RPC = "unknown_rpc"
    BAD_ARGUMENTS = "bad_arguments"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    BAD_TOKEN = "bad_token"
    OVER_LIMIT = "over_limit"
    OLD_SEQUENCE = "old_sequence"
    SEQUENCE_CONFLICT = "sequence_conflict"
    KEY_MISMATCH = "key_mismatch"


class ProtocolError(Exception):
    """Base of all DHT protocol errors; carries an ``ErrorCode``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """A peer sent something the protocol forbids."""


@dataclass(frozen=True, slots=True)
class Request:
    """An RPC call: ``name(*args)`` tagged with a 20-byte message id."""

    msg_id: bytes
    name: str
    args: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Response:
    """The return value of the call with ``msg_id``."""

    msg_id: bytes
    value: object


def _reject_ext(code: int, data: bytes) -> object:
    raise RemoteProtocolError(ErrorCode.MALFORMED, f"msgpack extension type {code} is not allowed")


def unpack_body(body: bytes) -> object:
    """Decode one msgpack value bounded by the datagram size; reject trailing bytes."""
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            max_bin_len=MAX_BODY_SIZE,
            max_str_len=MAX_BODY_SIZE,
            max_array_len=MAX_BODY_SIZE,
            max_map_len=MAX_BODY_SIZE,
            max_ext_len=0,
            ext_hook=_reject_ext,
            strict_map_key=True,
        )
    except RemoteProtocolError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"bad msgpack body: {exc}") from None


def pack(value: object) -> bytes:
    """Encode a value as rpcudp does (umsgpack: bytes as bin, str as str)."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def encode_request(msg_id: bytes, name: str, args: tuple[object, ...] | list[object]) -> bytes:
    """The datagram for ``name(*args)``; LocalProtocolError if over 8 KiB."""
    if len(msg_id) != MESSAGE_ID_SIZE:
        raise LocalProtocolError(ErrorCode.MALFORMED, "message id must be 20 bytes")
    body = pack([name, list(args)])
    if len(body) > MAX_BODY_SIZE:
        raise LocalProtocolError(ErrorCode.TOO_LARGE, f"request body of {len(body)} bytes exceeds {MAX_BODY_SIZE}")
    return bytes([TYPE_REQUEST]) + msg_id + body


def encode_response(msg_id: bytes, value: object) -> bytes:
    """The datagram answering ``msg_id`` with ``value``."""
    body = pack(value)
    if len(body) > MAX_BODY_SIZE:
        raise LocalProtocolError(ErrorCode.TOO_LARGE, f"response body of {len(body)} bytes exceeds {MAX_BODY_SIZE}")
    return bytes([TYPE_RESPONSE]) + msg_id + body


def decode_datagram(data: bytes) -> Request | Response:
    """Parse one datagram; RemoteProtocolError for anything malformed."""
    if len(data) > MAX_DATAGRAM_SIZE:
        raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"datagram of {len(data)} bytes")
    if len(data) < 1 + MESSAGE_ID_SIZE + 1:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"datagram of {len(data)} bytes is too short")
    kind, msg_id, body = data[0], data[1:21], data[21:]
    if kind not in (TYPE_REQUEST, TYPE_RESPONSE):
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown datagram type 0x{kind:02x}")
    value = unpack_body(body)
    if kind == TYPE_RESPONSE:
        return Response(msg_id, value)
    if not isinstance(value, list) or len(value) != 2:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "request body is not [name, args]")
    name, args = value
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or not isinstance(args, list):
        raise RemoteProtocolError(ErrorCode.MALFORMED, "request name or argument list malformed")
    return Request(msg_id, name, tuple(args))


# -- arguments of incoming requests (specs/dht.md §4.3) ----------------------

_ARITY = {PING: 1, STORE: 3, FIND_NODE: 2, FIND_VALUE: 2, MU_CONTACT: 1, MU_GET_PROVIDERS: 2, MU_ANNOUNCE: 4,
          MU_GET_RECORD: 2, MU_PUT_RECORD: 4}


def check_request(req: Request) -> bytes:
    """Check arity and ID-shaped arguments of a known RPC; return the sender's claimed ID."""
    arity = _ARITY.get(req.name)
    if arity is None:
        raise RemoteProtocolError(ErrorCode.UNKNOWN_RPC, f"no RPC named {req.name!r}")
    if len(req.args) != arity:
        raise RemoteProtocolError(ErrorCode.BAD_ARGUMENTS, f"{req.name} takes {arity} arguments, got {len(req.args)}")
    try:
        sender = check_id(req.args[0], "sender id")
        if arity >= 2:
            check_id(req.args[1], "key")
    except KademliaError as exc:
        raise RemoteProtocolError(ErrorCode.BAD_ARGUMENTS, str(exc)) from None
    return sender


def check_value(value: object) -> object:
    """A stored value: int, float, bool, str or bytes (as the kademlia package allows), bounded."""
    if not isinstance(value, (int, float, bool, str, bytes)):
        raise RemoteProtocolError(ErrorCode.BAD_ARGUMENTS, f"value of type {type(value).__name__} cannot be stored")
    if len(pack(value)) > MAX_VALUE_SIZE:
        raise RemoteProtocolError(ErrorCode.TOO_LARGE, f"value exceeds {MAX_VALUE_SIZE} bytes")
    return value


# -- replies we receive ------------------------------------------------------


def parse_node_id_reply(value: object) -> bytes:
    """A ``ping`` reply: the responder's 20-byte ID."""
    try:
        return check_id(value, "ping reply")
    except KademliaError as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, str(exc)) from None


def parse_contacts(value: object) -> list[Contact]:
    """A ``find_node`` reply: at most k ``[id, ip, port]`` triples."""
    if not isinstance(value, list) or len(value) > K:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "find_node reply is not a list of at most k contacts")
    try:
        return [Contact.from_wire(item) for item in value]
    except KademliaError as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"bad contact in reply: {exc}") from None


def parse_find_value_reply(value: object) -> tuple[object | None, list[Contact]]:
    """A ``find_value`` reply: ``{"value": v}`` or a contact list."""
    if isinstance(value, dict):
        if set(value) != {"value"}:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "find_value map must hold exactly 'value'")
        return check_value(value["value"]), []
    return None, parse_contacts(value)
