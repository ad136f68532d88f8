"""Every refusal of a mutable record has its own error code, over real UDP (issue 16
"Must hold": bad signature, replayed older sequence, a different key, an oversized value,
a flood from one peer; specs/dht.md §7.3 Mutable record, §9 Error codes).

The attacker is a raw UDP socket speaking rpcudp (``tests/node/dht/test_hostile_input.py``'s client).
"""

from __future__ import annotations

import logging
import secrets

import pytest
import trio

from node.dht import open_dht
from protocol.identity import Identity
from protocol.kademlia import sign_mutable
from protocol.kademlia.mutable import MAX_MUTABLE_PER_PEER, MUTABLE_VERSION, MutableRecord, signed_bytes
from protocol.kademlia.wire import pack
from tests.node.dht.test_hostile_input import SENDER, open_client


def oversized(seed: bytes, seq: int) -> bytes:
    """A correctly signed record whose value is one byte over the bound."""
    identity = Identity(seed)
    value = b"v" * 1001
    signature = identity.sign(signed_bytes(identity.public_key, seq, value))
    return pack([MUTABLE_VERSION, identity.public_key, seq, value, signature])


async def test_each_refusal_has_its_own_code_and_the_node_keeps_answering(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mu.dht")
    seed = secrets.token_bytes(32)
    async with open_dht(Identity(secrets.token_bytes(32))) as node:
        c = await open_client("127.0.0.1", ("127.0.0.1", node.port))
        five = sign_mutable(seed, 5, b"mu://five")
        key = five.key
        reply = await c.call("mu_get_record", [SENDER, key])
        assert isinstance(reply, dict) and reply["record"] is None
        token = reply["token"]

        def put(data: bytes, under: bytes = key, tok: bytes = token) -> list[object]:
            return [SENDER, under, tok, data]

        assert await c.call("mu_put_record", put(five.serialize())) is True
        forged = MutableRecord(five.public_key, 6, b"mu://forged", five.signature)
        other = sign_mutable(secrets.token_bytes(32), 9, b"mu://other")
        cases = [
            (put(forged.serialize()), "bad_signature"),
            (put(sign_mutable(seed, 4, b"mu://four").serialize()), "old_sequence"),
            (put(sign_mutable(seed, 5, b"mu://five again, different").serialize()), "sequence_conflict"),
            (put(oversized(seed, 7)), "too_large"),
            (put(other.serialize()), "key_mismatch"),
            (put(b"\x95\x01\x02\x03\x04\x05"), "malformed"),
            (put(sign_mutable(seed, 8, b"v").serialize(), tok=secrets.token_bytes(16)), "bad_token"),
        ]
        for args, code in cases:
            assert await c.call("mu_put_record", args) == code, code
        codes = {code for _, code in cases}
        assert len(codes) == len(cases)  # each reason is told apart
        refusals = [r.getMessage() for r in caplog.records if "refusing mu_put_record" in r.getMessage()]
        assert len(refusals) == len(cases) and all(any(code in m for m in refusals) for code in codes)

        # Nothing was lost: the node still serves seq 5, and takes seq 6 and the same record again.
        held = await c.call("mu_get_record", [SENDER, key])
        assert isinstance(held, dict) and MutableRecord.parse(held["record"]) == five
        assert await c.call("mu_put_record", put(five.serialize())) is True
        six = sign_mutable(seed, 6, b"mu://six")
        assert await c.call("mu_put_record", put(six.serialize())) is True
        assert node.records.get(key, node.wall_now()) == six
        assert await c.call("ping", [SENDER]) == node.node_id


async def test_a_flood_from_one_peer_is_refused_and_others_still_store() -> None:
    async with open_dht(Identity(secrets.token_bytes(32))) as node:
        flooder = await open_client("127.0.0.1", ("127.0.0.1", node.port))
        answers = []
        for _ in range(MAX_MUTABLE_PER_PEER + 10):
            record = sign_mutable(secrets.token_bytes(32), 0, b"spam")
            reply = await flooder.call("mu_get_record", [SENDER, record.key])
            assert isinstance(reply, dict)
            answers.append(await flooder.call("mu_put_record", [SENDER, record.key, reply["token"], record.serialize()]))
        assert answers.count(True) == MAX_MUTABLE_PER_PEER and answers.count("over_limit") == 10
        assert len(node.records) == MAX_MUTABLE_PER_PEER
        # Another source address has its own share; a spoofed source would need its token.
        honest = await open_client("127.0.0.2", ("127.0.0.1", node.port))
        record = sign_mutable(secrets.token_bytes(32), 3, b"mu://honest")
        reply = await honest.call("mu_get_record", [SENDER, record.key])
        assert isinstance(reply, dict)
        assert await honest.call("mu_put_record", [SENDER, record.key, reply["token"], record.serialize()]) is True
        # Updating a record this peer already placed takes no further share.
        seed = secrets.token_bytes(32)
        first, second = sign_mutable(seed, 0, b"a"), sign_mutable(seed, 1, b"b")
        node.records.put(first, "127.0.0.2", node.wall_now())
        reply = await honest.call("mu_get_record", [SENDER, first.key])
        assert isinstance(reply, dict)
        assert await honest.call("mu_put_record", [SENDER, first.key, reply["token"], second.serialize()]) is True


async def test_a_reader_ignores_forged_and_foreign_records_served_by_a_liar() -> None:
    seed = secrets.token_bytes(32)
    good = sign_mutable(seed, 2, b"mu://real")
    async with open_dht(Identity(secrets.token_bytes(32)), loopback_devnet=True) as honest, \
            open_dht(Identity(secrets.token_bytes(32)), loopback_devnet=True) as liar, \
            open_dht(Identity(secrets.token_bytes(32)), loopback_devnet=True) as reader:
        for n in (liar, reader):
            await n.bootstrap([("127.0.0.1", honest.port)])
        honest.records.put(good, "192.0.2.1", honest.wall_now())
        # The liar's store serves a higher sequence with a borrowed signature (stores trust their
        # own parse; this one is planted behind it).
        liar.records.put(MutableRecord(good.public_key, 99, b"mu://evil", good.signature), "192.0.2.1",
                         liar.wall_now())
        with trio.fail_after(20):
            assert await reader.resolve_record(good.public_key) == good
        # The write-back reaches the liar, which refuses it as older than its own "99".
        assert liar.records.get(good.key, liar.wall_now()).seq == 99  # type: ignore[union-attr]
