"""Segwit addresses: BIP 173 test vectors (and BIP 350 for versions 1..16)."""

from __future__ import annotations

import pytest

from protocol.bitcoin import AddressError, decode_address, encode_address, p2wpkh_for, PrivateKey

# BIP 173 "Test vectors" (https://github.com/bitcoin/bips/blob/master/bip-0173.mediawiki): version 0 addresses.
VALID = [
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "main", "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        "test",
        "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
    ),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        "signet",
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
]

# BIP 173 invalid addresses, plus its version 1+ bech32 examples, which BIP 350 makes invalid.
INVALID = [
    "tc1qw508d6qejxtdg4y5r3zarvary0c5xw7kg3g4ty",
    "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",
    "BC13W508D6QEJXTDG4Y5R3ZARVARY0C5XW7KN40WF2",
    "bc1rw5uspcuh",
    "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",
    "BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P",
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",
    "bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du",
    "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv",
    "bc1gmk9yu",
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7k7grplx",
    "BC1SW50QA3JX3S",
]


@pytest.mark.parametrize(("address", "network", "script"), VALID)
def test_valid_addresses(address: str, network: str, script: str) -> None:
    assert decode_address(address, network).hex() == script
    assert encode_address(bytes.fromhex(script), network) == address.lower()


@pytest.mark.parametrize("address", INVALID)
def test_invalid_addresses(address: str) -> None:
    network = "main" if address.lower().startswith("bc") else "test"
    with pytest.raises(AddressError):
        decode_address(address, network)


def test_networks_and_round_trip() -> None:
    script = p2wpkh_for(PrivateKey.from_seed(b"k").public_key)
    regtest = encode_address(script, "regtest")
    assert regtest.startswith("bcrt1q")
    assert decode_address(regtest, "regtest") == script
    assert encode_address(script, "signet") == encode_address(script, "test")
    with pytest.raises(AddressError, match="hrp"):
        decode_address(regtest, "main")
    with pytest.raises(ValueError):
        encode_address(script, "moon")
    with pytest.raises(AddressError):
        encode_address(b"\x76\xa9", "main")
    with pytest.raises(AddressError):
        encode_address(b"\x00\x15" + bytes(21), "main")


def test_taproot_uses_bech32m() -> None:
    script = b"\x51\x20" + bytes(range(32))
    address = encode_address(script, "main")
    assert address.startswith("bc1p")
    assert decode_address(address, "main") == script
