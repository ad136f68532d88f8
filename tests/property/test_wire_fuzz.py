"""Property tests: hostile bytes only ever raise RemoteProtocolError.

Random bytes, mutated valid records, and well-encrypted frames with random
headers and msgpack contents (which get past the AEAD and so exercise the
decoder itself) are fed to the Connection.
"""

from __future__ import annotations

import hashlib
import struct

import msgpack
from Crypto.Cipher import AES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.wire import (
    NEED_DATA,
    Chunk,
    ConnectionClosed,
    GetChunk,
    Have,
    PutChunk,
    RemoteProtocolError,
    State,
)
from protocol.wire._frames import HEADER, LENGTH_PREFIX
from tests.helpers.wire_pair import established_pair, make_pair

ADDR = hashlib.sha256(b"a").digest()
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed(conn: object, data: bytes, eof: bool) -> None:
    """Feed bytes; anything other than RemoteProtocolError fails the test."""
    try:
        conn.receive_data(data)  # type: ignore[attr-defined]
        for _ in range(1000):
            event = conn.next_event()  # type: ignore[attr-defined]
            if event is NEED_DATA:
                if not eof:
                    return
                conn.receive_data(b"")  # type: ignore[attr-defined]
                eof = False
                continue
            if isinstance(event, ConnectionClosed):
                return
    except RemoteProtocolError:
        assert conn.state is State.ERROR  # type: ignore[attr-defined]


@SETTINGS
@given(st.binary(max_size=600), st.booleans(), st.booleans())
def test_random_bytes_before_handshake(data: bytes, to_initiator: bool, eof: bool) -> None:
    init, resp = make_pair()
    if to_initiator:
        init.data_to_send()
        feed(init, data, eof)
    else:
        feed(resp, data, eof)


@SETTINGS
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_after_handshake(data: bytes, eof: bool) -> None:
    _, resp = established_pair()
    feed(resp, data, eof)


messages = st.sampled_from(
    [
        GetChunk(request_id=1, address=ADDR),
        PutChunk(request_id=2, address=ADDR, data=b"x" * 300, payment=b"p"),
        Chunk(request_id=3, address=ADDR, data=b"y" * 100),
        Have(request_id=4, addresses=(ADDR,) * 3),
    ]
)


@SETTINGS
@given(
    messages,
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
    st.integers(0, 10_000),
    st.booleans(),
)
def test_mutated_valid_records(message: object, flips: list[tuple[int, int]], cut: int, eof: bool) -> None:
    init, resp = established_pair()
    original = bytes(init.send(message))  # type: ignore[arg-type]
    wire = bytearray(original)
    for position, mask in flips:
        wire[position % len(wire)] ^= mask
    if wire == original:  # the flips cancelled out
        return
    if cut % 3 == 0:
        del wire[len(wire) - cut % len(wire) :]
    try:
        resp.receive_data(bytes(wire))
        event = resp.next_event()
        # A flip cannot survive the AEAD; only a pure truncation reaches here.
        assert event is NEED_DATA
        if eof:
            resp.receive_data(b"")
            resp.next_event()
            raise AssertionError("truncated record accepted at EOF")
    except RemoteProtocolError:
        assert resp.state is State.ERROR


def seal_raw(conn: object, plaintext: bytes) -> bytes:
    """Encrypt arbitrary frame bytes with the sender's real keys.

    Uses pycryptodome's own GCM, not the session's KeyedGcm, so the records
    are built independently of the code under test.
    """
    length = len(plaintext) + 16
    prefix = LENGTH_PREFIX.pack(length)
    state = conn._send  # type: ignore[attr-defined]
    cipher = AES.new(state._key, AES.MODE_GCM, nonce=bytes(4) + state.nonce.to_bytes(8, "big"))
    state._nonce += 1
    cipher.update(prefix)
    body, tag = cipher.encrypt_and_digest(plaintext)
    return prefix + body + tag


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["address", "payment", "stored", "addresses", "present", "code", "message", "owed", "version", "node_id", "x"]
)


@SETTINGS
@given(
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 2**32 - 1),
    st.dictionaries(field_names, msgpack_values, max_size=5) | msgpack_values,
    st.binary(max_size=64),
    st.sampled_from([1, 1, 1, 0, 2]),
    st.integers(-3, 3),
)
def test_authenticated_frames_with_random_contents(
    mtype: int, flags: int, request_id: int, meta: object, data: bytes, version: int, skew: int
) -> None:
    init, resp = established_pair()
    packed = msgpack.packb(meta, use_bin_type=True)
    meta_len = max(0, len(packed) + skew) if skew != 3 else 2**32 - 1
    plaintext = struct.pack(">BBHII", version, mtype, flags & 0x3, request_id, meta_len) + packed + data
    assert HEADER.size == 12
    try:
        resp.receive_data(seal_raw(init, plaintext))
        resp.next_event()
    except RemoteProtocolError:
        assert resp.state is State.ERROR
