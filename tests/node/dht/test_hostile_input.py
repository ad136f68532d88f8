"""Malformed datagrams, oversized values, store floods and forged provider records
are dropped with a log line, and the node keeps answering (issue 6, "Must hold").

The attacker is a raw UDP socket.  To show that a bad datagram got no reply
without waiting for a timeout, each one is followed by a ping: the node
handles datagrams in order, so the next datagram back must be the ping's reply.
"""

from __future__ import annotations

import logging
import secrets

import msgpack
import pytest
import trio

from node.dht import open_dht
from protocol.identity import Identity
from protocol.kademlia.records import ProviderRecord
from protocol.kademlia.storage import MAX_VALUES_PER_PEER
from protocol.kademlia.wire import Response, decode_datagram, encode_request, encode_response

SENDER = secrets.token_bytes(20)


class Client:
    def __init__(self, sock: trio.socket.SocketType, target: tuple[str, int]) -> None:
        self.sock = sock
        self.target = target

    async def next_reply(self) -> Response:
        """The next response; the node's own pings (it checks who asks it, §5.2) are answered on the way."""
        with trio.fail_after(10):
            while True:
                data, address = await self.sock.recvfrom(65536)
                message = decode_datagram(data)
                if isinstance(message, Response):
                    return message
                assert message.name == "ping"
                await self.sock.sendto(encode_response(message.msg_id, SENDER), address)

    async def call(self, name: str, args: list[object]) -> object:
        msg_id = secrets.token_bytes(20)
        await self.sock.sendto(encode_request(msg_id, name, args), self.target)
        reply = await self.next_reply()
        assert reply.msg_id == msg_id
        return reply.value

    async def send_raw_then_ping(self, data: bytes) -> None:
        """Send ``data``; assert that the next reply is the ping's (so ``data`` got none)."""
        await self.sock.sendto(data, self.target)
        assert await self.call("ping", [SENDER]) is not None


async def open_client(host: str, target: tuple[str, int]) -> Client:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return Client(sock, target)


async def test_malformed_datagrams_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mu.dht")
    async with open_dht(Identity(secrets.token_bytes(32))) as node:
        c = await open_client("127.0.0.1", ("127.0.0.1", node.port))
        assert await c.call("ping", [SENDER]) == node.node_id
        mid = secrets.token_bytes(20)
        bad = [
            b"",  # empty
            b"\x00" + mid,  # no body
            b"\x07" + mid + msgpack.packb(["ping", [SENDER]]),  # unknown type byte
            b"\x00" + mid + b"\xc1",  # never-used msgpack byte
            b"\x00" + mid + msgpack.packb(["ping", [SENDER]]) + b"\x00",  # trailing bytes
            b"\x00" + mid + msgpack.packb({"ping": 1}),  # not [name, args]
            b"\x00" + mid + msgpack.packb(["ping", []]),  # wrong arity
            b"\x00" + mid + msgpack.packb(["ping", [b"short"]]),  # bad node id
            b"\x00" + mid + msgpack.packb(["find_node", [SENDER, 42]]),  # key not bytes
            b"\x00" + mid + msgpack.packb(["shutdown", [SENDER]]),  # unknown RPC
            b"\x00" + mid + msgpack.packb(["ping", [msgpack.ExtType(5, b"x")]]),  # ext type
            b"\x00" + mid + b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
            b"\x00" + mid + b"\xa0" * 9000,  # over the 8 KiB bound
            b"\x01" + mid + msgpack.packb(True),  # response nobody asked for
        ]
        for data in bad:
            await c.send_raw_then_ping(data)
        drops = [r for r in caplog.records if "dropping" in r.getMessage()]
        assert len(drops) >= len(bad)
        assert len(node.table) == 1  # only the well-formed pinger got in


async def test_oversized_values_and_store_floods_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mu.dht")
    async with open_dht(Identity(secrets.token_bytes(32))) as node, open_dht(Identity(secrets.token_bytes(32))) as peer:
        c = await open_client("127.0.0.1", ("127.0.0.1", node.port))
        assert await c.call("store", [SENDER, secrets.token_bytes(20), b"x" * 5000]) is False
        assert await c.call("store", [SENDER, secrets.token_bytes(20), [1, 2]]) is False
        answers = [await c.call("store", [SENDER, secrets.token_bytes(20), b"v"]) for _ in range(MAX_VALUES_PER_PEER + 30)]
        assert answers.count(True) == MAX_VALUES_PER_PEER and answers.count(False) == 30
        assert len(node.values) == MAX_VALUES_PER_PEER
        assert sum("refusing store" in r.getMessage() for r in caplog.records) == 32
        # A well-behaved peer is still answered.
        await peer.bootstrap([("127.0.0.1", node.port)])
        assert await peer.ping(("127.0.0.1", node.port)) == node.node_id


async def test_forged_provider_records_are_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mu.dht")
    ident = Identity(secrets.token_bytes(32))
    async with open_dht(Identity(secrets.token_bytes(32))) as node:
        c = await open_client("127.0.0.1", ("127.0.0.1", node.port))
        key = secrets.token_bytes(20)
        reply = await c.call("mu_get_providers", [SENDER, key])
        assert isinstance(reply, dict)
        token = reply["token"]
        now = int(node.wall_now())
        good = ProviderRecord.create(ident, key=key, host="127.0.0.1", tcp_port=9000, terms={}, expires_at=now + 600)
        expired = ProviderRecord.create(ident, key=key, host="127.0.0.1", tcp_port=9000, terms={}, expires_at=now - 1)
        too_long = ProviderRecord.create(ident, key=key, host="127.0.0.1", tcp_port=9000, terms={}, expires_at=now + 10**7)
        other_key = ProviderRecord.create(ident, key=secrets.token_bytes(20), host="127.0.0.1", tcp_port=9000,
                                          terms={}, expires_at=now + 600)
        forged = ProviderRecord(key=key, public_key=good.public_key, host="127.0.0.1", tcp_port=9001, terms={},
                                expires_at=now + 600, signature=good.signature)
        cases = [
            (token, forged.serialize(), "bad_signature"),
            (token, expired.serialize(), "expired"),
            (token, too_long.serialize(), "bad_arguments"),
            (token, other_key.serialize(), "bad_arguments"),
            (token, b"\x93\x01\x02\x03", "malformed"),
            (b"", good.serialize(), "bad_token"),
            (secrets.token_bytes(16), good.serialize(), "bad_token"),
        ]
        for tok, data, code in cases:
            assert await c.call("mu_announce", [SENDER, key, tok, data]) == code
        # A token handed to another IP does not work from this one.
        other = await open_client("127.0.0.2", ("127.0.0.1", node.port))
        assert await other.call("mu_announce", [SENDER, key, token, good.serialize()]) == "bad_token"
        # A token from two rotations ago is stale.
        node.tokens.rotate()
        node.tokens.rotate()
        assert await c.call("mu_announce", [SENDER, key, token, good.serialize()]) == "bad_token"
        assert node.providers.get(key, node.wall_now()) == []
        assert sum("refusing mu_announce" in r.getMessage() for r in caplog.records) == len(cases) + 2
        # With a fresh token the genuine record is accepted and served.
        fresh = (await c.call("mu_get_providers", [SENDER, key]))["token"]  # type: ignore[index]
        assert await c.call("mu_announce", [SENDER, key, fresh, good.serialize()]) is True
        served = await c.call("mu_get_providers", [SENDER, key])
        assert served["providers"] == [good.serialize()]  # type: ignore[index]


async def test_forged_records_in_replies_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """A lying responder cannot plant a provider record with a bad signature."""
    caplog.set_level(logging.WARNING, logger="mu.dht")
    ident = Identity(secrets.token_bytes(32))
    async with open_dht(Identity(secrets.token_bytes(32))) as victim:
        liar = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await liar.bind(("127.0.0.1", 0))
        liar_id = secrets.token_bytes(20)
        key = secrets.token_bytes(20)
        good = ProviderRecord.create(ident, key=key, host="127.0.0.1", tcp_port=9000, terms={},
                                     expires_at=int(victim.wall_now()) + 600)
        forged = ProviderRecord(key=key, public_key=good.public_key, host="10.0.0.1", tcp_port=9000, terms={},
                                expires_at=good.expires_at, signature=good.signature)

        async def lie() -> None:
            while True:
                data, address = await liar.recvfrom(65536)
                request = decode_datagram(data)
                if request.name == "ping":  # type: ignore[union-attr]
                    body: object = liar_id
                else:
                    body = {"token": b"t" * 16, "providers": [forged.serialize(), good.serialize()], "nodes": []}
                await liar.sendto(b"\x01" + request.msg_id + msgpack.packb(body), address)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lie)
            await victim.bootstrap([liar.getsockname()])
            records = await victim.get_providers(key)
            nursery.cancel_scope.cancel()
        assert records == [good]
        assert any("dropping provider record" in r.getMessage() for r in caplog.records)
