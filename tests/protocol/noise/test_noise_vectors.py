"""Noise XX against the published cacophony vectors (tests/vectors/noise_xx.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocol.noise import NoiseError, XXHandshake, x25519, x25519_public_key

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "vectors" / "noise_xx.json").read_text())["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["name"])
def test_handshake_and_transport_match_vectors(vector: dict) -> None:
    h = bytes.fromhex
    init = XXHandshake(
        initiator=True,
        static_key=h(vector["init_static"]),
        ephemeral_key=h(vector["init_ephemeral"]),
        prologue=h(vector["init_prologue"]),
    )
    resp = XXHandshake(
        initiator=False,
        static_key=h(vector["resp_static"]),
        ephemeral_key=h(vector["resp_ephemeral"]),
        prologue=h(vector["resp_prologue"]),
    )
    messages = vector["messages"]
    sides = [init, resp]
    for i, msg in enumerate(messages[:3]):
        writer, reader = sides[i % 2], sides[(i + 1) % 2]
        assert writer.message_size(len(h(msg["payload"]))) == len(h(msg["ciphertext"]))
        wire = writer.write_message(h(msg["payload"]))
        assert wire.hex() == msg["ciphertext"]
        assert reader.read_message(wire) == h(msg["payload"])
    assert init.complete and resp.complete
    assert init.handshake_hash == resp.handshake_hash
    assert init.remote_static == x25519_public_key(h(vector["resp_static"]))
    assert resp.remote_static == x25519_public_key(h(vector["init_static"]))
    ciphers = {0: init.split(), 1: resp.split()}
    # Transport messages keep alternating, starting with the responder (vector format).
    for i, msg in enumerate(messages[3:], start=3):
        sender, receiver = ciphers[i % 2][0], ciphers[(i + 1) % 2][1]
        wire = sender.encrypt_with_ad(b"", h(msg["payload"]))
        assert wire.hex() == msg["ciphertext"]
        assert receiver.decrypt_with_ad(b"", wire) == h(msg["payload"])


def _pair() -> tuple[XXHandshake, XXHandshake]:
    v = VECTORS[0]
    h = bytes.fromhex
    return (
        XXHandshake(initiator=True, static_key=h(v["init_static"]), ephemeral_key=h(v["init_ephemeral"]), prologue=b"p"),
        XXHandshake(initiator=False, static_key=h(v["resp_static"]), ephemeral_key=h(v["resp_ephemeral"]), prologue=b"p"),
    )


def test_flipped_byte_in_any_handshake_message_fails() -> None:
    for step in range(3):
        for position in (0, 31, 35, -1):
            init, resp = _pair()
            sides = [init, resp]
            for i in range(step):
                sides[(i + 1) % 2].read_message(sides[i % 2].write_message(b""))
            wire = bytearray(sides[step % 2].write_message(b"payload"))
            wire[position] ^= 0x01
            reader = sides[(step + 1) % 2]
            if step == 0:
                # Message 1 is unauthenticated: the change shows up in message 2.
                reader.read_message(bytes(wire))
                with pytest.raises(NoiseError):
                    init.read_message(resp.write_message(b""))
                continue
            with pytest.raises(NoiseError):
                reader.read_message(bytes(wire))
            with pytest.raises(NoiseError):
                reader.read_message(bytes(wire))


def test_different_prologue_fails_at_message_two() -> None:
    init, resp = _pair()
    other = XXHandshake(initiator=True, static_key=bytes(range(32)), ephemeral_key=bytes(range(1, 33)), prologue=b"q")
    resp.read_message(other.write_message(b""))
    with pytest.raises(NoiseError):
        init.read_message(resp.write_message(b""))


def test_out_of_turn_and_low_order_keys_are_refused() -> None:
    init, resp = _pair()
    with pytest.raises(NoiseError):
        resp.write_message(b"")
    with pytest.raises(NoiseError):
        x25519(bytes(range(32)), bytes(32))
    with pytest.raises(NoiseError):
        resp.read_message(b"\x00" * 10)
