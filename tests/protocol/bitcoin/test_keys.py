"""secp256k1 keys: strict DER, low S, compressed keys, hash160."""

from __future__ import annotations

import hashlib

import pytest

from protocol.bitcoin import BadKeyError, PrivateKey, PublicKey, hash160, is_low_s, is_strict_der
from protocol.bitcoin.keys import CURVE_ORDER

DIGEST = hashlib.sha256(b"mu").digest()


def high_s(sig: bytes) -> bytes:
    """The same signature with S replaced by n - S (valid ECDSA, non-standard)."""
    len_r = sig[3]
    r = sig[4 : 4 + len_r]
    s = int.from_bytes(sig[6 + len_r :], "big")
    s_bytes = (CURVE_ORDER - s).to_bytes(33, "big").lstrip(b"\x00")
    if s_bytes[0] & 0x80:
        s_bytes = b"\x00" + s_bytes
    body = b"\x02" + bytes((len(r),)) + r + b"\x02" + bytes((len(s_bytes),)) + s_bytes
    return b"\x30" + bytes((len(body),)) + body


def test_hash160_known_value() -> None:
    # HASH160 of the BIP 143 P2WPKH example key is the program in its scriptPubKey.
    key = PublicKey.from_hex("025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357")
    assert key.hash160().hex() == "1d0f172a0ecb48aee1be1f2687d2963ae33f71a1"
    assert hash160(b"").hex() == "b472a266d0bd89c13706a4132ccfb16f7c3b9fcb"


def test_sign_is_deterministic_strict_der_low_s() -> None:
    key = PrivateKey.from_seed(b"alice")
    for i in range(50):
        digest = hashlib.sha256(bytes([i])).digest()
        sig = key.sign(digest)
        assert sig == key.sign(digest)
        assert is_strict_der(sig) and is_low_s(sig)
        assert key.public_key.verify(digest, sig)


def test_verify_refuses_high_s_wrong_key_and_wrong_digest() -> None:
    key = PrivateKey.from_seed(b"alice")
    sig = key.sign(DIGEST)
    assert is_strict_der(high_s(sig)) and not is_low_s(high_s(sig))
    assert not key.public_key.verify(DIGEST, high_s(sig))
    assert not PrivateKey.from_seed(b"bob").public_key.verify(DIGEST, sig)
    assert not key.public_key.verify(hashlib.sha256(b"other").digest(), sig)
    assert not key.public_key.verify(DIGEST, sig + b"\x00")
    assert not key.public_key.verify(DIGEST, b"")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:1] + bytes((s[1] + 1,)) + s[2:],  # wrong total length
        lambda s: b"\x31" + s[1:],  # wrong tag
        lambda s: s[:2] + b"\x03" + s[3:],  # R not an INTEGER
        lambda s: b"\x30" + bytes((s[1] + 1,)) + b"\x02" + bytes((s[3] + 1,)) + b"\x00" + s[4:],  # padded R
    ],
)
def test_non_strict_der_is_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    key = PrivateKey.from_seed(b"alice")
    sig = key.sign(DIGEST)
    bad = mutate(sig)
    assert not is_strict_der(bad)
    assert not key.public_key.verify(DIGEST, bad)


def test_public_key_must_be_compressed_and_on_curve() -> None:
    key = PrivateKey.from_seed(b"alice").public_key
    with pytest.raises(BadKeyError):
        PublicKey(b"\x04" + bytes(64))
    with pytest.raises(BadKeyError):
        PublicKey(b"\x02" + bytes(32))  # x = 0 is not on the curve
    with pytest.raises(BadKeyError):
        PublicKey(key.data[:-1])
    with pytest.raises(BadKeyError):
        PublicKey.from_hex("zz")
    assert PublicKey.from_hex(key.hex()) == key


def test_private_key_range() -> None:
    with pytest.raises(BadKeyError):
        PrivateKey(bytes(32))
    with pytest.raises(BadKeyError):
        PrivateKey(CURVE_ORDER.to_bytes(32, "big"))
    with pytest.raises(BadKeyError):
        PrivateKey(b"\x01" * 31)
    assert "secret" not in repr(PrivateKey.from_seed(b"x")).replace("<secret>", "")
