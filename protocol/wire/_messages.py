"""Message types: frozen dataclasses, their msgpack meta, and validation.

Every message carries ``request_id``.  Requests (GET_CHUNK, PUT_CHUNK,
HAVE, channel requests) pick an id; replies (CHUNK, PUT_OK, HAVE_REPLY,
ERROR answering a request) echo it and travel with the RESPONSE flag.
HELLO and session-level ERRORs use id 0.  Field tables: specs/wire.md §6 Messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import msgpack

from protocol.chunks import ADDRESS_SIZE
from protocol.wire._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.wire._frames import (
    CHANNEL_TYPES,
    MAX_CHANNEL_FIELDS,
    MAX_DATA_SIZE,
    MAX_ERROR_TEXT,
    MAX_HAVE_ADDRESSES,
    MAX_META_SIZE,
    MAX_PAYMENT_SIZE,
    MAX_REQUEST_ID,
    MAX_TERMS_ENTRIES,
    MessageType,
)

NODE_ID_SIZE = 20
# AUDIT (specs/erasure.md §7.1): a 32-byte nonce, at most 64 KiB of the share hashed per audit.
AUDIT_NONCE_SIZE = 32
MAX_AUDIT_LENGTH = 65536
IDENTITY_KEY_SIZE = 32
PAYMENT_KEY_SIZE = 33
# SYNC_NOTIFY (specs/sync.md §16 Notify): a device's record key and its new sequence number.
SYNC_DEVICE_KEY_SIZE = 32
MAX_SYNC_SEQ = 2**64 - 1

# An opaque payment proof (specs/payments.md defines it): bytes or a small map.
Payment = Union[bytes, dict[str, Any], None]


def _check(condition: bool, what: str) -> None:
    # Validation runs on both our own messages (construction) and decoded ones;
    # decode() turns LocalProtocolError into RemoteProtocolError.
    if not condition:
        raise LocalProtocolError(what, ErrorCode.MALFORMED)


def _check_request_id(request_id: int) -> None:
    _check(isinstance(request_id, int) and 0 <= request_id <= MAX_REQUEST_ID, "request_id out of range")


def _check_address(address: bytes) -> None:
    _check(isinstance(address, (bytes, bytearray)) and len(address) == ADDRESS_SIZE, "address must be 32 bytes")


def _check_payment(payment: Payment) -> None:
    if payment is None:
        return
    if isinstance(payment, (bytes, bytearray)):
        _check(len(payment) <= MAX_PAYMENT_SIZE, "payment too large")
        return
    _check(isinstance(payment, dict) and len(payment) <= MAX_CHANNEL_FIELDS, "payment must be bytes or a small map")
    _check(all(isinstance(k, str) for k in payment), "payment keys must be strings")
    _check(len(msgpack.packb(payment)) <= MAX_PAYMENT_SIZE, "payment too large")


def _check_data(data: bytes) -> None:
    _check(isinstance(data, (bytes, bytearray, memoryview)), "data must be bytes")
    _check(len(data) <= MAX_DATA_SIZE, "data exceeds MAX_DATA_SIZE")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """First frame in each direction: who I am and on what terms I serve."""

    version: int
    node_id: bytes
    identity_key: bytes
    tcp_port: int
    udp_port: int
    payment_key: bytes
    terms: dict[str, Any] = field(default_factory=dict)
    request_id: int = 0

    def __post_init__(self) -> None:
        _check(self.request_id == 0, "HELLO uses request_id 0")
        _check(isinstance(self.version, int) and 0 <= self.version <= 255, "bad version")
        _check(isinstance(self.node_id, bytes) and len(self.node_id) == NODE_ID_SIZE, "node_id must be 20 bytes")
        _check(isinstance(self.identity_key, bytes) and len(self.identity_key) == IDENTITY_KEY_SIZE, "bad identity key")
        for port in (self.tcp_port, self.udp_port):
            _check(isinstance(port, int) and 0 <= port <= 65535, "port out of range")
        _check(isinstance(self.payment_key, bytes) and len(self.payment_key) == PAYMENT_KEY_SIZE, "bad payment key")
        _check(self.payment_key[0] in (2, 3), "payment key must be a compressed secp256k1 point")
        _check(isinstance(self.terms, dict) and len(self.terms) <= MAX_TERMS_ENTRIES, "terms must be a small map")
        _check(all(isinstance(k, str) for k in self.terms), "terms keys must be strings")


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage:
    """ERROR: a request failed (request_id != 0) or the session is ending (0)."""

    request_id: int
    code: int
    message: str = ""
    owed: int | None = None  # satoshis still due, with INSUFFICIENT_PAYMENT

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check(isinstance(self.code, int) and 0 <= self.code <= 0xFFFF, "error code out of range")
        _check(isinstance(self.message, str) and len(self.message) <= MAX_ERROR_TEXT, "error text too long")
        _check(self.owed is None or (isinstance(self.owed, int) and 0 <= self.owed < 2**63), "owed out of range")


@dataclass(frozen=True, slots=True, kw_only=True)
class GetChunk:
    request_id: int
    address: bytes
    payment: Payment = None

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_address(self.address)
        _check_payment(self.payment)


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """Reply to GET_CHUNK; ``data`` travels raw after the meta."""

    request_id: int
    address: bytes
    data: bytes

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_address(self.address)
        _check_data(self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class PutChunk:
    """Store a chunk; ``renewal``: a fresh 32-byte id making this PUT a paid renewal (specs/erasure.md §9)."""

    request_id: int
    address: bytes
    data: bytes
    payment: Payment = None
    renewal: bytes | None = None

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_address(self.address)
        _check_data(self.data)
        _check_payment(self.payment)
        if self.renewal is not None:
            _check_address(self.renewal)


@dataclass(frozen=True, slots=True, kw_only=True)
class PutOk:
    request_id: int
    address: bytes
    stored: bool  # False: the chunk was already there

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_address(self.address)
        _check(isinstance(self.stored, bool), "stored must be a bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class Have:
    request_id: int
    addresses: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check(isinstance(self.addresses, tuple) and len(self.addresses) <= MAX_HAVE_ADDRESSES, "too many addresses")
        for address in self.addresses:
            _check_address(address)


@dataclass(frozen=True, slots=True, kw_only=True)
class HaveReply:
    request_id: int
    present: tuple[bool, ...]

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check(isinstance(self.present, tuple) and len(self.present) <= MAX_HAVE_ADDRESSES, "too many answers")
        _check(all(isinstance(p, bool) for p in self.present), "answers must be bools")


@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    """Prove you hold share ``address``: hash ``length`` bytes from ``offset`` with ``nonce`` (specs/erasure.md §7.1).

    ``charge``: the owner checked this very challenge's proof and pays for
    it now, with ``payment`` as on a GET (specs/erasure.md §7.4 Paid audits).
    """

    request_id: int
    address: bytes
    nonce: bytes
    offset: int
    length: int
    charge: bool = False
    payment: Payment = None

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check_address(self.address)
        _check(isinstance(self.nonce, (bytes, bytearray)) and len(self.nonce) == AUDIT_NONCE_SIZE, "nonce must be 32 bytes")
        _check(type(self.offset) is int and 0 <= self.offset < 2**32, "offset out of range")
        _check(type(self.length) is int and 1 <= self.length <= MAX_AUDIT_LENGTH, "audit length out of range")
        _check(isinstance(self.charge, bool), "charge must be a bool")
        _check(self.charge or self.payment is None, "only a charged audit carries a payment")
        _check_payment(self.payment)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditProof:
    request_id: int
    proof: bytes

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check(isinstance(self.proof, (bytes, bytearray)) and len(self.proof) == 32, "proof must be 32 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelMessage:
    """A payment-channel message (types 0x20-0x2F), fields defined by specs/payments.md.

    The wire layer only bounds and passes the msgpack map through.
    """

    request_id: int
    type: MessageType
    fields: dict[str, Any]
    response: bool = False

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        _check(self.type in CHANNEL_TYPES, "not a channel message type")
        _check(isinstance(self.fields, dict) and len(self.fields) <= MAX_CHANNEL_FIELDS, "fields must be a small map")
        _check(all(isinstance(k, str) for k in self.fields), "field names must be strings")
        _check(isinstance(self.response, bool), "response must be a bool")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncNotify:
    """SYNC_NOTIFY: device ``device`` published its record with sequence number ``seq`` (specs/sync.md §16 Notify).

    One-way: no reply, not even ERROR; ``request_id`` is 0.  It names no
    folder and carries no secret: a node that syncs no folder with that
    device ignores it.
    """

    device: bytes
    seq: int
    request_id: int = 0

    def __post_init__(self) -> None:
        _check(self.request_id == 0, "SYNC_NOTIFY uses request_id 0")
        _check(isinstance(self.device, bytes) and len(self.device) == SYNC_DEVICE_KEY_SIZE, "device must be 32 bytes")
        _check(type(self.seq) is int and 1 <= self.seq <= MAX_SYNC_SEQ, "seq out of range")


Message = Union[Hello, ErrorMessage, GetChunk, Chunk, PutChunk, PutOk, Have, HaveReply, Audit, AuditProof, ChannelMessage,
                SyncNotify]
REPLY_TYPES = (Chunk, PutOk, HaveReply, AuditProof)
_TYPE_CODES = frozenset(int(t) for t in MessageType)


def is_response(message: Message) -> bool:
    """True if ``message`` answers a request (it travels with the RESPONSE flag)."""
    if isinstance(message, REPLY_TYPES):
        return True
    if isinstance(message, ErrorMessage):
        return message.request_id != 0
    if isinstance(message, ChannelMessage):
        return message.response
    return False


def encode_meta(message: Message) -> tuple[MessageType, dict[str, Any], bytes]:
    """Return (type, meta map, data) of a message."""
    m = message
    if isinstance(m, GetChunk):
        meta: dict[str, Any] = {"address": m.address}
        if m.payment is not None:
            meta["payment"] = m.payment
        return MessageType.GET_CHUNK, meta, b""
    if isinstance(m, Chunk):
        return MessageType.CHUNK, {"address": m.address}, m.data
    if isinstance(m, PutChunk):
        meta = {"address": m.address}
        if m.payment is not None:
            meta["payment"] = m.payment
        if m.renewal is not None:
            meta["renewal"] = m.renewal
        return MessageType.PUT_CHUNK, meta, m.data
    if isinstance(m, PutOk):
        return MessageType.PUT_OK, {"address": m.address, "stored": m.stored}, b""
    if isinstance(m, Have):
        return MessageType.HAVE, {"addresses": list(m.addresses)}, b""
    if isinstance(m, HaveReply):
        return MessageType.HAVE_REPLY, {"present": list(m.present)}, b""
    if isinstance(m, Audit):
        meta = {"address": m.address, "nonce": m.nonce, "offset": m.offset, "length": m.length}
        if m.charge:  # absent means false: an r1 peer's AUDIT reads the same
            meta["charge"] = True
        if m.payment is not None:
            meta["payment"] = m.payment
        return MessageType.AUDIT, meta, b""
    if isinstance(m, AuditProof):
        return MessageType.AUDIT_PROOF, {"proof": m.proof}, b""
    if isinstance(m, ErrorMessage):
        meta = {"code": int(m.code), "message": m.message}
        if m.owed is not None:
            meta["owed"] = m.owed
        return MessageType.ERROR, meta, b""
    if isinstance(m, Hello):
        return MessageType.HELLO, {
            "version": m.version,
            "node_id": m.node_id,
            "identity_key": m.identity_key,
            "tcp_port": m.tcp_port,
            "udp_port": m.udp_port,
            "payment_key": m.payment_key,
            "terms": m.terms,
        }, b""
    if isinstance(m, ChannelMessage):
        return m.type, m.fields, b""
    if isinstance(m, SyncNotify):
        return MessageType.SYNC_NOTIFY, {"device": m.device, "seq": m.seq}, b""
    raise LocalProtocolError(f"not a wire message: {type(m).__name__}")


def _fields(meta: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()) -> None:
    keys = set(meta)
    if not required <= keys or not keys <= required | optional:
        raise LocalProtocolError(f"meta keys {sorted(keys)} do not match {sorted(required)}")


def decode_message(mtype: int, response: bool, request_id: int, meta: Any, data: bytes | bytearray) -> Message:
    """Build and validate a message from a decoded frame.

    Raises RemoteProtocolError for unknown types, missing or extra fields,
    wrong field types or a request/response flag that does not fit the type.
    """
    try:
        if mtype not in _TYPE_CODES:
            raise RemoteProtocolError(f"unknown message type {mtype:#x}", ErrorCode.UNKNOWN_MESSAGE_TYPE)
        t = MessageType(mtype)
        if not isinstance(meta, dict):
            raise LocalProtocolError("meta is not a map")
        if data and t not in (MessageType.CHUNK, MessageType.PUT_CHUNK):
            raise LocalProtocolError("data section on a message type without data")
        message: Message
        if t == MessageType.GET_CHUNK:
            _fields(meta, {"address"}, frozenset({"payment"}))
            message = GetChunk(request_id=request_id, address=meta["address"], payment=meta.get("payment"))
        elif t == MessageType.CHUNK:
            _fields(meta, {"address"})
            # bytearray: the decrypted chunk is handed over without a copy.
            message = Chunk(request_id=request_id, address=meta["address"], data=data)  # type: ignore[arg-type]
        elif t == MessageType.PUT_CHUNK:
            _fields(meta, {"address"}, frozenset({"payment", "renewal"}))
            message = PutChunk(
                request_id=request_id, address=meta["address"], data=data, payment=meta.get("payment"),  # type: ignore[arg-type]
                renewal=meta.get("renewal"),
            )
        elif t == MessageType.PUT_OK:
            _fields(meta, {"address", "stored"})
            message = PutOk(request_id=request_id, address=meta["address"], stored=meta["stored"])
        elif t == MessageType.HAVE:
            _fields(meta, {"addresses"})
            message = Have(request_id=request_id, addresses=tuple(meta["addresses"]))
        elif t == MessageType.HAVE_REPLY:
            _fields(meta, {"present"})
            message = HaveReply(request_id=request_id, present=tuple(meta["present"]))
        elif t == MessageType.AUDIT:
            _fields(meta, {"address", "nonce", "offset", "length"}, frozenset({"charge", "payment"}))
            if meta.get("charge", True) is not True:
                raise LocalProtocolError("charge is sent only as true")
            message = Audit(request_id=request_id, address=meta["address"], nonce=meta["nonce"], offset=meta["offset"],
                            length=meta["length"], charge=meta.get("charge", False), payment=meta.get("payment"))
        elif t == MessageType.AUDIT_PROOF:
            _fields(meta, {"proof"})
            message = AuditProof(request_id=request_id, proof=meta["proof"])
        elif t == MessageType.ERROR:
            _fields(meta, {"code", "message"}, frozenset({"owed"}))
            message = ErrorMessage(request_id=request_id, code=meta["code"], message=meta["message"], owed=meta.get("owed"))
        elif t == MessageType.HELLO:
            _fields(meta, {"version", "node_id", "identity_key", "tcp_port", "udp_port", "payment_key", "terms"})
            message = Hello(request_id=request_id, **meta)
        elif t == MessageType.SYNC_NOTIFY:
            _fields(meta, {"device", "seq"})
            message = SyncNotify(request_id=request_id, device=meta["device"], seq=meta["seq"])
        else:
            message = ChannelMessage(request_id=request_id, type=t, fields=meta, response=response)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(str(exc), exc.code) from None
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"bad field: {exc}", ErrorCode.MALFORMED) from None
    if is_response(message) != response:
        raise RemoteProtocolError("RESPONSE flag does not match the message type", ErrorCode.MALFORMED)
    return message


def unpack_meta(meta: bytes) -> Any:
    """Decode a meta section with hard msgpack limits (STYLE.md rule 4).

    Rejects trailing bytes, extension types and oversize containers before
    allocating for them.
    """
    if len(meta) > MAX_META_SIZE:
        raise RemoteProtocolError("meta exceeds MAX_META_SIZE", ErrorCode.FRAME_TOO_LARGE)
    try:
        return msgpack.unpackb(
            meta,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=MAX_META_SIZE,
            max_str_len=MAX_META_SIZE,
            max_array_len=MAX_HAVE_ADDRESSES,
            max_map_len=max(MAX_TERMS_ENTRIES, MAX_CHANNEL_FIELDS),
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types; all mean malformed
        raise RemoteProtocolError(f"bad msgpack meta: {type(exc).__name__}", ErrorCode.MALFORMED) from None
