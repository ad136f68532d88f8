"""Build pairs of wire Connections and pump bytes between them, no sockets."""

from __future__ import annotations

import hashlib

from protocol.identity import Identity
from protocol.wire import NEED_DATA, Connection, Event, Hello, Role


def identity(n: int) -> Identity:
    return Identity(hashlib.sha256(b"identity %d" % n).digest())


def hello_for(ident: Identity, **terms: object) -> Hello:
    return Hello(
        version=1,
        node_id=ident.node_id,
        identity_key=ident.public_key,
        tcp_port=4000,
        udp_port=4001,
        payment_key=b"\x02" + bytes(32),
        terms=dict(terms),
    )


def make_pair(
    initiator_id: int = 1, responder_id: int = 2, expected: bytes | None = None
) -> tuple[Connection, Connection]:
    a, b = identity(initiator_id), identity(responder_id)
    init = Connection(
        Role.INITIATOR,
        identity=a,
        static_key=hashlib.sha256(b"static a").digest(),
        ephemeral_key=hashlib.sha256(b"eph a").digest(),
        hello=hello_for(a),
        expected_node_id=expected if expected is not None else b.node_id,
    )
    resp = Connection(
        Role.RESPONDER,
        identity=b,
        static_key=hashlib.sha256(b"static b").digest(),
        ephemeral_key=hashlib.sha256(b"eph b").digest(),
        hello=hello_for(b, price_per_mib=5),
    )
    return init, resp


def drain(conn: Connection) -> list[Event]:
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)  # type: ignore[arg-type]


def pump(a: Connection, b: Connection) -> tuple[list[Event], list[Event]]:
    """Move queued handshake bytes both ways until quiet; return events seen."""
    seen_a: list[Event] = []
    seen_b: list[Event] = []
    for _ in range(6):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            break
        if out_a:
            b.receive_data(out_a)
        seen_b += drain(b)
        if out_b:
            a.receive_data(out_b)
        seen_a += drain(a)
    return seen_a, seen_b


def established_pair() -> tuple[Connection, Connection]:
    init, resp = make_pair()
    pump(init, resp)
    return init, resp
