"""The wire Connection: handshake, identity binding, frames, errors."""

from __future__ import annotations

import hashlib

import pytest

from protocol.wire import (
    MAX_DATA_SIZE,
    NEED_DATA,
    ChannelMessage,
    Chunk,
    ConnectionClosed,
    ErrorCode,
    ErrorMessage,
    GetChunk,
    Have,
    HaveReply,
    LocalProtocolError,
    MessageType,
    PutChunk,
    PutOk,
    RemoteProtocolError,
    SessionEstablished,
    State,
)
from protocol.chunks import MAX_SEALED_SIZE
from tests.helpers.wire_pair import drain, established_pair, identity, make_pair, pump

ADDR = hashlib.sha256(b"chunk").digest()


def test_handshake_establishes_both_sides_with_peer_hello() -> None:
    init, resp = make_pair()
    seen_init, seen_resp = pump(init, resp)
    assert [type(e) for e in seen_init] == [SessionEstablished]
    assert [type(e) for e in seen_resp] == [SessionEstablished]
    assert seen_init[0].peer_node_id == identity(2).node_id  # type: ignore[union-attr]
    assert seen_resp[0].peer_node_id == identity(1).node_id  # type: ignore[union-attr]
    assert seen_init[0].hello.terms == {"price_per_mib": 5}  # type: ignore[union-attr]
    assert init.state is State.OPEN and resp.state is State.OPEN


def test_initiator_refuses_a_responder_with_another_node_id() -> None:
    init, resp = make_pair(expected=identity(3).node_id)
    with pytest.raises(RemoteProtocolError) as info:
        pump(init, resp)
    assert info.value.code == ErrorCode.IDENTITY_MISMATCH
    assert init.state is State.ERROR


@pytest.mark.parametrize(
    "message",
    [
        GetChunk(request_id=1, address=ADDR),
        GetChunk(request_id=2, address=ADDR, payment={"channel": b"x" * 32, "amount": 10}),
        Chunk(request_id=3, address=ADDR, data=b"abc" * 1000),
        PutChunk(request_id=4, address=ADDR, data=b"", payment=b"sig"),
        PutOk(request_id=5, address=ADDR, stored=True),
        Have(request_id=6, addresses=(ADDR, ADDR)),
        HaveReply(request_id=6, present=(True, False)),
        ErrorMessage(request_id=7, code=ErrorCode.INSUFFICIENT_PAYMENT, message="pay up", owed=1200),
        ErrorMessage(request_id=0, code=ErrorCode.MALFORMED),
        ChannelMessage(request_id=8, type=MessageType.OPEN_CHANNEL, fields={"capacity": 100_000}),
        ChannelMessage(request_id=8, type=MessageType.CHANNEL_ACCEPTED, fields={}, response=True),
    ],
)
def test_messages_round_trip(message: object) -> None:
    init, resp = established_pair()
    resp.receive_data(bytes(init.send(message)))  # type: ignore[arg-type]
    assert drain(resp) == [message]
    init.receive_data(bytes(resp.send(message)))  # type: ignore[arg-type]
    assert drain(init) == [message]


def test_max_size_chunk_and_byte_at_a_time_delivery() -> None:
    init, resp = established_pair()
    big = Chunk(request_id=9, address=ADDR, data=bytes(range(256)) * (MAX_DATA_SIZE // 256))
    resp.receive_data(bytes(init.send(big)))
    assert drain(resp) == [big]
    small = bytes(init.send(GetChunk(request_id=10, address=ADDR)))
    for i in range(len(small) - 1):
        resp.receive_data(small[i : i + 1])
        assert resp.next_event() is NEED_DATA
    resp.receive_data(small[-1:])
    assert resp.next_event() == GetChunk(request_id=10, address=ADDR)


def test_the_longest_chunk_an_encoder_makes_crosses_the_wire_and_one_byte_more_does_not() -> None:
    # A 4 MiB data chunk sealed with its tag (a format-3 cut at CDC_MAX: any long run of equal bytes).
    assert MAX_DATA_SIZE == MAX_SEALED_SIZE
    init, resp = established_pair()
    longest = bytes(range(256)) * (MAX_SEALED_SIZE // 256) + b"t" * (MAX_SEALED_SIZE % 256)
    put = PutChunk(request_id=3, address=hashlib.sha256(longest).digest(), data=longest)
    resp.receive_data(bytes(init.send(put)))
    assert drain(resp) == [put]
    reply = Chunk(request_id=4, address=put.address, data=longest)
    init.receive_data(bytes(resp.send(reply)))
    assert drain(init) == [reply]
    with pytest.raises(LocalProtocolError):
        PutChunk(request_id=5, address=put.address, data=longest + b"x")


def test_flipped_byte_in_any_position_of_a_frame_ends_the_session() -> None:
    reference = None
    for position in range(0, 90):
        init, resp = established_pair()
        wire = bytearray(init.send(PutChunk(request_id=1, address=ADDR, data=b"0123456789")))
        reference = len(wire)
        wire[position % len(wire)] ^= 0x20
        resp.receive_data(bytes(wire))
        with pytest.raises(RemoteProtocolError) as info:
            drain(resp)
            resp.receive_data(b"")
            drain(resp)
        assert info.value.code in (ErrorCode.DECRYPT_FAILED, ErrorCode.MALFORMED, ErrorCode.FRAME_TOO_LARGE)
        assert resp.state is State.ERROR
    assert reference is not None and reference <= 90


@pytest.mark.parametrize("part", ["length", "header", "meta", "data", "tag"])
def test_flipped_byte_in_a_chunk_sized_record_ends_the_session(part: str) -> None:
    # Records past ONE_SHOT_MAX are opened in pieces (specs/wire.md §4.3): a
    # change anywhere still fails, and nothing of the record comes out.
    init, resp = established_pair()
    wire = bytearray(init.send(Chunk(request_id=1, address=ADDR, data=bytes(range(256)) * 4096)))
    position = {"length": 1, "header": 4 + 9, "meta": 4 + 20, "data": len(wire) // 2, "tag": len(wire) - 1}[part]
    wire[position] ^= 0x01
    resp.receive_data(bytes(wire))
    with pytest.raises(RemoteProtocolError) as info:
        drain(resp)
        resp.receive_data(b"")
        drain(resp)
    assert info.value.code in (ErrorCode.DECRYPT_FAILED, ErrorCode.MALFORMED)
    assert resp.state is State.ERROR


def test_a_batch_is_the_records_of_single_sends_back_to_back() -> None:
    messages = [
        GetChunk(request_id=1, address=ADDR),
        Chunk(request_id=2, address=ADDR, data=bytes(range(256)) * 1024),
        PutOk(request_id=3, address=ADDR, stored=False),
        PutChunk(request_id=4, address=ADDR, data=b"\x07" * 70_000),
    ]
    one_by_one, _ = established_pair()
    batched, resp = established_pair()
    expected = b"".join(bytes(one_by_one.send(m)) for m in messages)
    batch = batched.send_batch(messages)
    assert bytes(batch) == expected  # same bytes, same nonces: only the writes differ
    resp.receive_data(bytes(batch))
    assert drain(resp) == messages
    # The buffer is reused: a smaller batch next is a view of its first bytes,
    # and a bigger one replaces it, leaving a view still held intact.
    held = bytes(batch)
    small = batched.send_batch(messages[:1])
    assert bytes(small) == bytes(one_by_one.send(messages[0]))
    big = Chunk(request_id=5, address=ADDR, data=bytes(300_000))
    still = batched.send_batch([big])
    assert bytes(still) == bytes(one_by_one.send(big))
    assert bytes(batch)[: len(small)] == bytes(small) and len(batch) == len(held)


def test_a_batch_with_a_message_that_cannot_go_uses_no_nonce() -> None:
    init, resp = established_pair()
    bad = ChannelMessage(request_id=1, type=MessageType.OPEN_CHANNEL, fields={"blob": b"x" * (70 * 1024)})
    with pytest.raises(LocalProtocolError):
        init.send_batch([GetChunk(request_id=1, address=ADDR), bad])
    resp.receive_data(bytes(init.send_batch([GetChunk(request_id=2, address=ADDR)])))
    assert drain(resp) == [GetChunk(request_id=2, address=ADDR)]


def test_replayed_record_fails_authentication() -> None:
    init, resp = established_pair()
    wire = bytes(init.send(GetChunk(request_id=1, address=ADDR)))
    resp.receive_data(wire + wire)
    assert resp.next_event() == GetChunk(request_id=1, address=ADDR)
    with pytest.raises(RemoteProtocolError) as info:
        resp.next_event()
    assert info.value.code == ErrorCode.DECRYPT_FAILED


def test_oversize_record_length_is_refused_before_buffering() -> None:
    init, resp = established_pair()
    resp.receive_data((2**31).to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError) as info:
        resp.next_event()
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def test_bad_preamble_is_unsupported_version() -> None:
    _, resp = make_pair()
    resp.receive_data(b"mu\x00\x09")
    with pytest.raises(RemoteProtocolError) as info:
        resp.next_event()
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION


def test_clean_eof_and_truncated_eof() -> None:
    init, resp = established_pair()
    resp.receive_data(b"")
    assert isinstance(resp.next_event(), ConnectionClosed)
    init2, resp2 = established_pair()
    resp2.receive_data(bytes(init2.send(GetChunk(request_id=1, address=ADDR)))[:-3])
    resp2.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        resp2.next_event()


def test_local_misuse_raises_local_errors() -> None:
    init, resp = make_pair()
    with pytest.raises(LocalProtocolError):
        init.send(GetChunk(request_id=1, address=ADDR))
    with pytest.raises(LocalProtocolError):
        GetChunk(request_id=1, address=b"short")
    with pytest.raises(LocalProtocolError):
        Have(request_id=1, addresses=(ADDR,) * 5000)
    with pytest.raises(LocalProtocolError):
        ChannelMessage(request_id=1, type=MessageType.GET_CHUNK, fields={})


def test_non_string_keys_in_payment_are_malformed() -> None:
    with pytest.raises(LocalProtocolError):
        GetChunk(request_id=1, address=ADDR, payment={b"k": 1})  # type: ignore[dict-item]
