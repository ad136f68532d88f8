from __future__ import annotations

import hashlib

import pytest

from protocol.identity import Identity, IdentityError, node_id_from_public_key, verify_signature

# RFC 8032 §7.1, TEST 1: secret key, public key, signature of the empty message.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_rfc8032_vector() -> None:
    ident = Identity(RFC8032_SEED)
    assert ident.public_key == RFC8032_PUB
    assert ident.sign(b"") == RFC8032_SIG
    assert ident.node_id == hashlib.sha256(RFC8032_PUB).digest()[:20]


def test_verify_rejects_tampering() -> None:
    ident = Identity(bytes(range(32)))
    sig = ident.sign(b"msg")
    assert verify_signature(ident.public_key, b"msg", sig)
    assert not verify_signature(ident.public_key, b"msh", sig)
    assert not verify_signature(ident.public_key, b"msg", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify_signature(b"\x00" * 31, b"msg", sig)


def test_bad_sizes() -> None:
    with pytest.raises(IdentityError):
        Identity(b"short")
    with pytest.raises(IdentityError):
        node_id_from_public_key(b"x" * 33)
