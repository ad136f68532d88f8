"""rpcudp datagrams (specs/dht.md §4), checked against umsgpack, the codec rpcudp uses."""

from __future__ import annotations

import pytest
import umsgpack

from protocol.kademlia.wire import (
    MAX_BODY_SIZE,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    Request,
    Response,
    check_request,
    check_value,
    decode_datagram,
    encode_request,
    encode_response,
    parse_contacts,
    parse_find_value_reply,
)

MID = bytes(range(20))
NID = b"\x11" * 20


def test_request_matches_rpcudp_bytes() -> None:
    # rpcudp: b"\x00" + msg_id + umsgpack.packb([name, args]) with args a tuple.
    ours = encode_request(MID, "find_node", [NID, b"\x22" * 20])
    theirs = b"\x00" + MID + umsgpack.packb(["find_node", (NID, b"\x22" * 20)])
    assert ours == theirs
    assert decode_datagram(theirs) == Request(MID, "find_node", (NID, b"\x22" * 20))


def test_response_round_trips_with_umsgpack() -> None:
    value = [[NID, "127.0.0.1", 4000]]
    assert encode_response(MID, value) == b"\x01" + MID + umsgpack.packb([(NID, "127.0.0.1", 4000)])
    assert decode_datagram(b"\x01" + MID + umsgpack.packb({"value": "hi"})) == Response(MID, {"value": "hi"})
    assert decode_datagram(b"\x01" + MID + umsgpack.packb(True)) == Response(MID, True)


def test_oversize_request_refused_locally() -> None:
    with pytest.raises(LocalProtocolError) as e:
        encode_request(MID, "store", [NID, NID, b"x" * MAX_BODY_SIZE])
    assert e.value.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize("data,code", [
    (b"\x00" * 21, ErrorCode.MALFORMED),
    (b"\x02" + MID + b"\xc0", ErrorCode.MALFORMED),
    (b"\x00" + MID + b"\xc1", ErrorCode.MALFORMED),
    (b"\x00" + MID + umsgpack.packb("ping"), ErrorCode.MALFORMED),
    (b"\x00" + MID + umsgpack.packb([1, []]), ErrorCode.MALFORMED),
    (b"\x00" + MID + umsgpack.packb(["x" * 40, []]), ErrorCode.MALFORMED),
    (b"\x00" + MID + umsgpack.packb(["ping", []]) + b"\x90", ErrorCode.MALFORMED),
    (b"\x00" + MID + b"\xa0" * (MAX_BODY_SIZE + 1), ErrorCode.TOO_LARGE),
])
def test_bad_datagrams(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        decode_datagram(data)
    assert e.value.code is code


def test_request_argument_checks() -> None:
    assert check_request(Request(MID, "ping", (NID,))) == NID
    for req, code in [
        (Request(MID, "ping", ()), ErrorCode.BAD_ARGUMENTS),
        (Request(MID, "store", (NID, b"short", 1)), ErrorCode.BAD_ARGUMENTS),
        (Request(MID, "rpc_stun", (NID,)), ErrorCode.UNKNOWN_RPC),
    ]:
        with pytest.raises(RemoteProtocolError) as e:
            check_request(req)
        assert e.value.code is code


def test_values_and_replies() -> None:
    for v in (1, 1.5, True, "s", b"b"):
        assert check_value(v) == v
    for v, code in (([1], ErrorCode.BAD_ARGUMENTS), (None, ErrorCode.BAD_ARGUMENTS), (b"x" * 5000, ErrorCode.TOO_LARGE)):
        with pytest.raises(RemoteProtocolError) as e:
            check_value(v)
        assert e.value.code is code
    assert parse_find_value_reply({"value": "v"}) == ("v", [])
    assert parse_find_value_reply([[NID, "10.0.0.1", 1]])[1][0].node_id == NID
    for bad in ({"value": 1, "x": 2}, [[NID, "10.0.0.1", 1]] * 21, [[NID, "h"]], None):
        with pytest.raises(RemoteProtocolError):
            parse_find_value_reply(bad)
    with pytest.raises(RemoteProtocolError):
        parse_contacts("nope")
