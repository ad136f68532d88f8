"""Segwit addresses: bech32 (BIP 173) for version 0, bech32m (BIP 350) for 1..16.

Human-readable parts by network: ``bc`` (main), ``tb`` (test and signet
share it), ``bcrt`` (regtest).  Decoding checks the character set, mixed
case, the 90-character limit, the checksum variant required by the witness
version and the program length (BIP 141: 2..40 bytes; 20 or 32 for v0).
"""

from __future__ import annotations

from protocol.bitcoin.errors import AddressError
from protocol.bitcoin.script import witness_program, witness_program_script

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
BECH32_CONST = 1
BECH32M_CONST = 0x2BC830A3
MAX_ADDRESS_LENGTH = 90  # BIP 173 "Bech32" length limit

NETWORK_HRPS = {"main": "bc", "test": "tb", "signet": "tb", "regtest": "bcrt"}


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    maxv = (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or (acc << (to_bits - bits)) & maxv:
        raise AddressError("invalid padding in address data")
    return out


def bech32_encode(hrp: str, data: list[int], const: int) -> str:
    values = _hrp_expand(hrp) + data
    polymod = _polymod(values + [0] * 6) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in data + checksum)


def bech32_decode(text: str) -> tuple[str, list[int], int]:
    """Split and verify a bech32/bech32m string: (hrp, 5-bit data, checksum constant)."""
    if len(text) > MAX_ADDRESS_LENGTH:
        raise AddressError("address longer than 90 characters")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise AddressError("address has characters outside US-ASCII 33..126")
    if text.lower() != text and text.upper() != text:
        raise AddressError("address mixes upper and lower case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise AddressError("address separator misplaced")
    hrp = text[:pos]
    try:
        data = [_CHARSET_REV[c] for c in text[pos + 1 :]]
    except KeyError as exc:
        raise AddressError("address has a character outside the bech32 set") from exc
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (BECH32_CONST, BECH32M_CONST):
        raise AddressError("address checksum is wrong")
    return hrp, data[:-6], const


def hrp_for(network: str) -> str:
    try:
        return NETWORK_HRPS[network]
    except KeyError:
        raise ValueError(f"unknown network {network!r}; expected one of {sorted(NETWORK_HRPS)}") from None


def encode_address(script_pubkey: bytes, network: str) -> str:
    """The segwit address of a witness-program scriptPubKey on ``network``."""
    prog = witness_program(script_pubkey)
    if prog is None:
        raise AddressError("script is not a witness program")
    version, program = prog
    if version == 0 and len(program) not in (20, 32):
        raise AddressError("v0 witness program must be 20 or 32 bytes")
    const = BECH32_CONST if version == 0 else BECH32M_CONST
    return bech32_encode(hrp_for(network), [version] + _convert_bits(program, 8, 5, True), const)


def decode_address(address: str, network: str) -> bytes:
    """The scriptPubKey an address on ``network`` pays to.

    Raises:
        AddressError: wrong network, bad checksum or variant, bad program.
    """
    hrp, data, const = bech32_decode(address)
    if hrp != hrp_for(network):
        raise AddressError(f"address is for hrp {hrp!r}, not {network}")
    if not data:
        raise AddressError("address has no witness version")
    version = data[0]
    if version > 16:
        raise AddressError("witness version above 16")
    program = bytes(_convert_bits(data[1:], 5, 8, False))
    if not 2 <= len(program) <= 40:
        raise AddressError("witness program length outside 2..40")
    if version == 0 and len(program) not in (20, 32):
        raise AddressError("v0 witness program must be 20 or 32 bytes")
    expected = BECH32_CONST if version == 0 else BECH32M_CONST
    if const != expected:
        raise AddressError("wrong checksum variant for this witness version (BIP 350)")
    return witness_program_script(version, program)
