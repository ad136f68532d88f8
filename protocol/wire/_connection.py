"""The session state machine: Noise XX handshake, then encrypted frames.

h11-style and sans-I/O: feed socket bytes to ``receive_data``, pull events
with ``next_event`` (``NEED_DATA`` when more bytes are needed), turn
messages into socket bytes with ``send``, and flush ``data_to_send`` after
every step (handshake messages and our HELLO are queued there).

States (specs/wire.md §3 Handshake, §3.4 HELLO, §7 Error codes)::

    initiator: AWAIT_MSG2 -> AWAIT_HELLO -> OPEN
    responder: AWAIT_MSG1 -> AWAIT_MSG3 -> AWAIT_HELLO -> OPEN
    any state -> CLOSED (peer EOF) or ERROR (protocol error; drop the socket)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Union

import msgpack

from protocol.identity import Identity, node_id_from_public_key, verify_signature
from protocol.noise import CipherState, NoiseError, XXHandshake
from protocol.wire._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.wire._frames import (
    HEADER,
    HEADER_SIZE,
    LENGTH_PREFIX,
    LENGTH_PREFIX_SIZE,
    MAX_DATA_SIZE,
    MAX_META_SIZE,
    MAX_RECORD_SIZE,
    MIN_RECORD_SIZE,
    TAG_SIZE,
    WIRE_VERSION,
    Flags,
)
from protocol.wire._messages import ErrorMessage, Hello, Message, decode_message, encode_meta, is_response, unpack_meta

# Sent by the initiator before Noise message 1 and mixed in as the Noise
# prologue, so a version mismatch is caught early and can never be downgraded.
PREAMBLE = b"mu\x00" + bytes([WIRE_VERSION])
STATIC_KEY_DOMAIN = b"mu:noise-static-key:v1"
# Handshake payload: identity public key (32) || Ed25519 signature (64).
AUTH_PAYLOAD_SIZE = 32 + 64
MSG1_SIZE = 32
MSG2_SIZE = 32 + (32 + TAG_SIZE) + (AUTH_PAYLOAD_SIZE + TAG_SIZE)
MSG3_SIZE = (32 + TAG_SIZE) + (AUTH_PAYLOAD_SIZE + TAG_SIZE)
# Bound on bytes buffered but not yet parsed: one whole record plus one read.
MAX_READ_SIZE = 1024 * 1024
MAX_RECEIVE_BUFFER = LENGTH_PREFIX_SIZE + MAX_RECORD_SIZE + MAX_READ_SIZE


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(Enum):
    AWAIT_MSG1 = "await-msg1"
    AWAIT_MSG2 = "await-msg2"
    AWAIT_MSG3 = "await-msg3"
    AWAIT_HELLO = "await-hello"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class NeedData:
    """Sentinel type: ``next_event`` needs more bytes from the socket."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEstablished:
    """The handshake succeeded and the peer's HELLO arrived and matches it."""

    peer_node_id: bytes
    peer_identity_key: bytes
    hello: Hello


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side cleanly between records."""


Event = Union[SessionEstablished, ConnectionClosed, Message]


def sign_static_key(identity: Identity, static_public: bytes) -> bytes:
    """The handshake payload binding a Noise static key to an identity."""
    return identity.public_key + identity.sign(STATIC_KEY_DOMAIN + static_public)


def _record_size(head: bytes, data: bytes) -> int:
    """Bytes on the wire of a record carrying the frame ``head || data`` (specs/wire.md §4.1 Layout)."""
    return LENGTH_PREFIX_SIZE + len(head) + len(data) + TAG_SIZE


def _meta_length(header: bytes) -> int:
    """The meta_length field of a frame header (specs/wire.md §5 Frames)."""
    return int.from_bytes(header[8:12], "big")


class Connection:
    """One side of a mu session.

    Args:
        role: INITIATOR (dialled out) or RESPONDER (accepted).
        identity: this node's Ed25519 identity; signs the static key.
        static_key: 32-byte X25519 static private key.
        ephemeral_key: 32 fresh random bytes, used for this session only.
        hello: our HELLO, sent as the first frame after the handshake.
        expected_node_id: initiator only: the node ID we dialled.  The
            session fails with IDENTITY_MISMATCH if the responder's identity
            hashes to anything else.
    """

    def __init__(
        self,
        role: Role,
        *,
        identity: Identity,
        static_key: bytes,
        ephemeral_key: bytes,
        hello: Hello,
        expected_node_id: bytes | None = None,
    ) -> None:
        if role is Role.INITIATOR and expected_node_id is None:
            raise LocalProtocolError("the initiator must say which node ID it dialled")
        if hello.node_id != identity.node_id or hello.identity_key != identity.public_key:
            raise LocalProtocolError("HELLO does not describe our identity")
        self.role = role
        self._identity = identity
        self._hello = hello
        self._expected = expected_node_id
        self._static_key = static_key
        self._ephemeral_key = ephemeral_key
        # The responder builds its handshake state only once message 1 is in,
        # so a flood of junk connections costs no X25519 work (specs/wire.md §10 Security considerations).
        self._hs: XXHandshake | None = self._new_handshake() if role is Role.INITIATOR else None
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        # Unparsed bytes are _buf[_pos:_end]; _buf may have spare room past _end
        # so the transport can read straight into it (get_buffer/buffer_updated).
        self._buf = bytearray()
        self._pos = 0
        self._end = 0
        self._eof = False
        self._out = bytearray()
        # Reused by send_batch for every batch (grown, by replacement, to the
        # biggest batch sent so far; the transport bounds batches: specs/wire.md
        # §8 Limits and defaults, SEND_BATCH_SIZE).
        self._send_buf = bytearray()
        self.peer_identity_key: bytes | None = None
        self.peer_node_id: bytes | None = None
        self.peer_hello: Hello | None = None
        if role is Role.INITIATOR:
            self._out += PREAMBLE + self._handshake().write_message(b"")
            self.state = State.AWAIT_MSG2
        else:
            self.state = State.AWAIT_MSG1

    # ----------------------------------------------------------------- input
    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the socket; ``b""`` means the peer sent EOF."""
        if self._eof:
            raise LocalProtocolError("data after EOF")
        if not data:
            self._eof = True
            return
        size = len(data)
        with self.get_buffer(size) as view:
            view[:size] = data
        self.buffer_updated(size)

    def get_buffer(self, size: int) -> memoryview:
        """Return a writable view of ``size`` free bytes at the end of the buffer.

        The zero-copy alternative to ``receive_data`` (the asyncio
        BufferedProtocol pattern): read into the view, release it, then call
        ``buffer_updated(n)``.  Raises LocalProtocolError past MAX_RECEIVE_BUFFER.
        """
        if self._eof:
            raise LocalProtocolError("data after EOF")
        if self._pos == self._end:
            self._pos = self._end = 0
            if len(self._buf) > 2 * MAX_READ_SIZE:
                # Give back the room a big record needed once it is parsed.
                self._buf = bytearray()
        pending = self._end - self._pos
        if pending + size > MAX_RECEIVE_BUFFER:
            raise LocalProtocolError("receive buffer over MAX_RECEIVE_BUFFER; call next_event first")
        if self._pos and self._end + size > len(self._buf):
            # Move the unparsed tail to the front rather than grow the buffer.
            self._buf[:pending] = self._buf[self._pos : self._end]
            self._pos, self._end = 0, pending
        if self._end + size > len(self._buf):
            self._buf.extend(bytes(self._end + size - len(self._buf)))
        return memoryview(self._buf)[self._end : self._end + size]

    @property
    def wanted(self) -> int:
        """Bytes still missing from the record being received (0 if unknown).

        Lets the transport size its next read to finish a big record in one
        call while keeping reads small (and buffers small) otherwise.
        """
        pending = self._end - self._pos
        if self._recv is None or pending < LENGTH_PREFIX_SIZE:
            return 0
        length: int = LENGTH_PREFIX.unpack_from(self._buf, self._pos)[0]
        return max(0, min(length, MAX_RECORD_SIZE) + LENGTH_PREFIX_SIZE - pending)

    def buffer_updated(self, size: int) -> None:
        """Record that ``size`` bytes were written into the last ``get_buffer`` view."""
        if size < 0 or self._end + size > len(self._buf):
            raise LocalProtocolError("buffer_updated past the buffer")
        self._end += size

    def data_to_send(self) -> bytes:
        """Return and clear bytes the state machine queued (handshake, HELLO)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | NeedData:
        """Return the next event, or NEED_DATA.

        Raises:
            RemoteProtocolError: the peer broke the protocol; the connection
                is now in ERROR and must be closed.
        """
        if self.state is State.ERROR:
            raise LocalProtocolError("connection already failed")
        if self.state is State.CLOSED:
            return ConnectionClosed()
        try:
            event = self._next_event()
        except RemoteProtocolError:
            self.state = State.ERROR
            raise
        if isinstance(event, NeedData) and self._eof:
            if self._end - self._pos or self.state is not State.OPEN:
                self.state = State.ERROR
                raise RemoteProtocolError("connection closed mid-record or mid-handshake", ErrorCode.MALFORMED)
            self.state = State.CLOSED
            return ConnectionClosed()
        return event

    def _take(self, size: int) -> bytes | None:
        if self._end - self._pos < size:
            return None
        chunk = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        return chunk

    def _next_event(self) -> Event | NeedData:
        while True:
            if self.state is State.AWAIT_MSG1:
                raw = self._take(len(PREAMBLE) + MSG1_SIZE)
                if raw is None:
                    if self._end - self._pos >= len(PREAMBLE) and self._buf[self._pos : self._pos + 4] != PREAMBLE:
                        raise RemoteProtocolError("bad preamble or wire version", ErrorCode.UNSUPPORTED_VERSION)
                    return NEED_DATA
                if raw[: len(PREAMBLE)] != PREAMBLE:
                    raise RemoteProtocolError("bad preamble or wire version", ErrorCode.UNSUPPORTED_VERSION)
                self._handshake_read(raw[len(PREAMBLE) :])
                self._out += self._handshake().write_message(sign_static_key(self._identity, self._handshake().local_static))
                self.state = State.AWAIT_MSG3
            elif self.state is State.AWAIT_MSG2:
                raw = self._take(MSG2_SIZE)
                if raw is None:
                    return NEED_DATA
                self._authenticate(self._handshake_read(raw))
                hs = self._handshake()
                self._out += hs.write_message(sign_static_key(self._identity, hs.local_static))
                self._finish_handshake()
            elif self.state is State.AWAIT_MSG3:
                raw = self._take(MSG3_SIZE)
                if raw is None:
                    return NEED_DATA
                self._authenticate(self._handshake_read(raw))
                self._finish_handshake()
            else:
                message = self._read_record()
                if message is None:
                    return NEED_DATA
                if self.state is State.AWAIT_HELLO:
                    return self._accept_hello(message)
                if isinstance(message, Hello):
                    raise RemoteProtocolError("second HELLO", ErrorCode.UNEXPECTED_MESSAGE)
                return message

    # ------------------------------------------------------------- handshake
    def _new_handshake(self) -> XXHandshake:
        return XXHandshake(
            initiator=self.role is Role.INITIATOR,
            static_key=self._static_key,
            ephemeral_key=self._ephemeral_key,
            prologue=PREAMBLE,
        )

    def _handshake(self) -> XXHandshake:
        if self._hs is None:
            self._hs = self._new_handshake()
        return self._hs

    def _handshake_read(self, raw: bytes) -> bytes:
        try:
            return self._handshake().read_message(raw)
        except NoiseError as exc:
            raise RemoteProtocolError(f"handshake failed: {exc}", ErrorCode.HANDSHAKE_FAILED) from None

    def _authenticate(self, payload: bytes) -> None:
        """Check the peer's identity key signed its Noise static key."""
        if len(payload) != AUTH_PAYLOAD_SIZE:
            raise RemoteProtocolError("bad handshake payload size", ErrorCode.HANDSHAKE_FAILED)
        identity_key, signature = payload[:32], payload[32:]
        remote_static = self._handshake().remote_static
        assert remote_static is not None
        if not verify_signature(identity_key, STATIC_KEY_DOMAIN + remote_static, signature):
            raise RemoteProtocolError("static key not signed by the identity key", ErrorCode.HANDSHAKE_FAILED)
        node_id = node_id_from_public_key(identity_key)
        if self._expected is not None and node_id != self._expected:
            raise RemoteProtocolError(
                f"peer is {node_id.hex()}, dialled {self._expected.hex()}", ErrorCode.IDENTITY_MISMATCH
            )
        self.peer_identity_key = identity_key
        self.peer_node_id = node_id

    def _finish_handshake(self) -> None:
        self._send, self._recv = self._handshake().split()
        self._hs = None
        self._static_key = self._ephemeral_key = b""
        self.state = State.AWAIT_HELLO
        self._out += self._seal(self._hello)

    def _accept_hello(self, message: Message) -> SessionEstablished:
        if not isinstance(message, Hello):
            raise RemoteProtocolError("first frame must be HELLO", ErrorCode.UNEXPECTED_MESSAGE)
        if message.node_id != self.peer_node_id or message.identity_key != self.peer_identity_key:
            raise RemoteProtocolError("HELLO does not match the handshake identity", ErrorCode.IDENTITY_MISMATCH)
        if message.version != WIRE_VERSION:
            raise RemoteProtocolError(f"unsupported version {message.version}", ErrorCode.UNSUPPORTED_VERSION)
        self.peer_hello = message
        self.state = State.OPEN
        assert self.peer_node_id is not None and self.peer_identity_key is not None
        return SessionEstablished(peer_node_id=self.peer_node_id, peer_identity_key=self.peer_identity_key, hello=message)

    # ---------------------------------------------------------------- records
    def _read_record(self) -> Message | None:
        buf = self._buf
        pos = self._pos
        if self._end - pos < LENGTH_PREFIX_SIZE:
            return None
        (length,) = LENGTH_PREFIX.unpack_from(buf, pos)
        if length > MAX_RECORD_SIZE:
            raise RemoteProtocolError(f"record of {length} bytes exceeds MAX_RECORD_SIZE", ErrorCode.FRAME_TOO_LARGE)
        if length < MIN_RECORD_SIZE:
            raise RemoteProtocolError("record shorter than a frame header", ErrorCode.MALFORMED)
        end = pos + LENGTH_PREFIX_SIZE + length
        if self._end < end:
            return None
        assert self._recv is not None
        body_size = length - TAG_SIZE
        start = pos + LENGTH_PREFIX_SIZE
        view = memoryview(buf)
        record = view[start:end]
        try:
            # Authenticated before anything is parsed, and decrypted in
            # pieces straight out of the receive buffer: header, meta, and the
            # data as the one ``bytes`` object the message keeps, with no
            # copy of a big chunk (specs/wire.md §4.1 Layout, §4.3
            # Implementation note).  The length prefix is the associated data.
            try:
                head, meta, data = self._recv.open_split(
                    bytes(view[pos:start]), record, HEADER_SIZE, _meta_length
                )
            except NoiseError:
                raise RemoteProtocolError("record failed authentication", ErrorCode.DECRYPT_FAILED) from None
        finally:
            # No view may outlive this call: the buffer must stay resizable.
            record.release()
            view.release()
        version, mtype, flags, request_id, meta_len = HEADER.unpack(head)
        bad_meta_len = meta_len > body_size - HEADER_SIZE
        data_len = len(data)
        self._pos = end
        if version != WIRE_VERSION:
            raise RemoteProtocolError(f"frame version {version}", ErrorCode.UNSUPPORTED_VERSION)
        if bad_meta_len or meta_len > MAX_META_SIZE:
            raise RemoteProtocolError("meta length out of bounds", ErrorCode.MALFORMED)
        if data_len > MAX_DATA_SIZE:
            raise RemoteProtocolError("data exceeds MAX_DATA_SIZE", ErrorCode.FRAME_TOO_LARGE)
        if flags & ~Flags.KNOWN:
            raise RemoteProtocolError(f"unknown flags {flags:#x}", ErrorCode.MALFORMED)
        return decode_message(mtype, bool(flags & Flags.RESPONSE), request_id, unpack_meta(meta), data)

    def _encode(self, message: Message) -> tuple[bytes, bytes]:
        """Return a frame's header and meta (one bytes) and its data section."""
        mtype, meta, data = encode_meta(message)
        try:
            head_meta = msgpack.packb(meta, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode message: {exc}") from None
        if len(head_meta) > MAX_META_SIZE:
            raise LocalProtocolError("meta exceeds MAX_META_SIZE", ErrorCode.FRAME_TOO_LARGE)
        flags = Flags.RESPONSE if is_response(message) else 0
        head = HEADER.pack(WIRE_VERSION, int(mtype), flags, message.request_id, len(head_meta)) + head_meta
        return head, data

    def _seal_into(self, head: bytes, data: bytes, out: memoryview) -> None:
        """Encrypt the frame ``head || data`` as one record filling ``out`` exactly."""
        assert self._send is not None
        prefix = LENGTH_PREFIX.pack(len(out) - LENGTH_PREFIX_SIZE)
        out[:LENGTH_PREFIX_SIZE] = prefix
        # The length prefix is the associated data (specs/wire.md §4.1 Layout).
        self._send.seal_into(prefix, (head, data) if data else (head,), out[LENGTH_PREFIX_SIZE:])

    def _seal(self, message: Message) -> bytearray:
        head, data = self._encode(message)
        out = bytearray(_record_size(head, data))
        with memoryview(out) as view:
            self._seal_into(head, data, view)
        return out

    def _check_sendable(self, message: Message) -> None:
        # After a remote error only a final ERROR may go out (specs/wire.md §7 Error codes).
        if self._send is None or (self.state is State.ERROR and not isinstance(message, ErrorMessage)):
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        if isinstance(message, Hello):
            raise LocalProtocolError("HELLO is sent automatically, once")

    # ----------------------------------------------------------------- output
    def send(self, message: Message) -> bytearray:
        """Encrypt ``message`` into one record and return the bytes to write.

        Raises LocalProtocolError before the handshake is done, after an
        error, or if the message breaks a limit.
        """
        self._check_sendable(message)
        return self._seal(message)

    def send_batch(self, messages: Sequence[Message]) -> memoryview:
        """Encrypt ``messages`` into consecutive records, in order, for one write.

        The records are built in a buffer this connection reuses, and the
        view is valid only until the next ``send_batch`` call: write it out
        first.  The bytes are those of ``send`` for each message in turn
        (one nonce each); batching changes only how many socket writes they
        take (specs/wire.md §8 Limits and defaults, SEND_BATCH_SIZE).
        Reusing the buffer saves allocating and zeroing a fresh megabyte per
        chunk (its pages stay mapped and in cache); it is replaced, never
        resized, when a bigger batch comes, so a view still held elsewhere
        stays valid.  Every message is checked and encoded before any is
        sealed, so on LocalProtocolError no nonce is used.
        """
        for message in messages:
            self._check_sendable(message)
        frames = [self._encode(message) for message in messages]
        sizes = [_record_size(head, data) for head, data in frames]
        total = sum(sizes)
        if len(self._send_buf) < total:
            self._send_buf = bytearray(total)  # kept for the next batches
        view = memoryview(self._send_buf)
        offset = 0
        for (head, data), size in zip(frames, sizes):
            with view[offset : offset + size] as record:
                self._seal_into(head, data, record)
            offset += size
        batch = view[:total]
        view.release()
        return batch

    @property
    def can_send(self) -> bool:
        return self._send is not None

