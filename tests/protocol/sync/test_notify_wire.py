"""SYNC_NOTIFY on the wire (specs/sync.md §16 Notify, specs/wire.md §6 Messages)."""

from __future__ import annotations

import msgpack
import pytest

from protocol.wire import ErrorCode, LocalProtocolError, MessageType, RemoteProtocolError, SyncNotify, is_response
from protocol.wire._frames import HEADER
from protocol.wire._messages import decode_message, encode_meta
from tests.helpers.wire_pair import drain, established_pair

DEVICE = bytes(range(32))


def test_a_notify_round_trips_one_way_and_carries_only_a_key_and_a_sequence_number() -> None:
    init, resp = established_pair()
    message = SyncNotify(device=DEVICE, seq=7)
    resp.receive_data(bytes(init.send(message)))
    assert drain(resp) == [message]
    assert not is_response(message)
    assert encode_meta(message) == (MessageType.SYNC_NOTIFY, {"device": DEVICE, "seq": 7}, b"")


def test_the_frame_is_byte_for_byte_what_the_spec_shows() -> None:
    mtype, meta, data = encode_meta(SyncNotify(device=DEVICE, seq=7))
    packed = msgpack.packb(meta, use_bin_type=True)
    # specs/sync.md §16.1: fixmap(2), "device", bin8(32) id, "seq", positive fixint.
    assert packed == b"\x82\xa6device\xc4\x20" + DEVICE + b"\xa3seq\x07"
    assert HEADER.pack(1, mtype, 0, 0, len(packed)) == bytes.fromhex("01300000" "00000000" "0000002f")
    assert len(packed) == 47 and data == b""


@pytest.mark.parametrize("meta", [
    {"device": DEVICE},  # no seq
    {"device": DEVICE, "seq": 1, "folder": b"x"},  # an extra field
    {"device": DEVICE[:31], "seq": 1},  # short key
    {"device": "not bytes", "seq": 1},
    {"device": DEVICE, "seq": 0},  # sequence numbers start at 1
    {"device": DEVICE, "seq": 2**64},
    {"device": DEVICE, "seq": True},
    {"device": DEVICE, "seq": -1},
    ["not", "a", "map"],
])
def test_a_malformed_notify_is_refused_as_malformed(meta: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(MessageType.SYNC_NOTIFY, False, 0, meta, b"")
    assert info.value.code == ErrorCode.MALFORMED


def test_a_notify_is_never_a_reply_nor_numbered_nor_carries_data() -> None:
    meta = {"device": DEVICE, "seq": 1}
    for response, request_id, data in ((True, 0, b""), (False, 5, b""), (False, 0, b"x")):
        with pytest.raises(RemoteProtocolError):
            decode_message(MessageType.SYNC_NOTIFY, response, request_id, meta, data)
    with pytest.raises(LocalProtocolError):
        SyncNotify(device=DEVICE, seq=1, request_id=3)
