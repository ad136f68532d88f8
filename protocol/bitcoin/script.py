"""Script construction: pushes, P2WPKH, P2WSH and the mu channel script.

Only what mu builds and checks lives here; there is no interpreter (Bitcoin
Core's, through libbitcoinkernel, is the reference in tests).  Pushes are
always minimal (BIP 62 rule 3, Bitcoin Core's MINIMALDATA policy).
"""

from __future__ import annotations

import struct

from protocol.bitcoin.errors import DecodeError
from protocol.bitcoin.keys import PublicKey
from protocol.bitcoin.serialize import sha256
from protocol.bitcoin.tx import LOCKTIME_THRESHOLD  # channel expiries are heights, below it

OP_0 = 0x00
OP_PUSHDATA1 = 0x4C
OP_PUSHDATA2 = 0x4D
OP_PUSHDATA4 = 0x4E
OP_1NEGATE = 0x4F
OP_1 = 0x51
OP_16 = 0x60
OP_RETURN = 0x6A
OP_IF = 0x63
OP_ELSE = 0x67
OP_ENDIF = 0x68
OP_DROP = 0x75
OP_DUP = 0x76
OP_EQUAL = 0x87
OP_EQUALVERIFY = 0x88
OP_HASH160 = 0xA9
OP_CHECKSIG = 0xAC
OP_CHECKSIGVERIFY = 0xAD
OP_CHECKLOCKTIMEVERIFY = 0xB1

MAX_SCRIPT_ELEMENT_SIZE = 520  # consensus limit on one pushed element


def push_data(data: bytes) -> bytes:
    """The minimal push of ``data`` (direct, PUSHDATA1/2/4 by length).

    Single bytes 1..16 and 0x81 are not special-cased here: callers pushing
    numbers use :func:`push_int`, which picks OP_0/OP_1..OP_16/OP_1NEGATE.
    """
    n = len(data)
    if n < OP_PUSHDATA1:
        return bytes((n,)) + data
    if n <= 0xFF:
        return bytes((OP_PUSHDATA1, n)) + data
    if n <= 0xFFFF:
        return bytes((OP_PUSHDATA2,)) + struct.pack("<H", n) + data
    return bytes((OP_PUSHDATA4,)) + struct.pack("<I", n) + data


def script_num(n: int) -> bytes:
    """CScriptNum encoding: minimal little-endian magnitude with a sign bit."""
    if n == 0:
        return b""
    negative = n < 0
    mag = -n if negative else n
    out = bytearray()
    while mag:
        out.append(mag & 0xFF)
        mag >>= 8
    if out[-1] & 0x80:
        out.append(0x80 if negative else 0x00)
    elif negative:
        out[-1] |= 0x80
    return bytes(out)


def push_int(n: int) -> bytes:
    """Minimal push of a script number (OP_0, OP_1NEGATE, OP_1..OP_16 or data)."""
    if n == 0:
        return bytes((OP_0,))
    if n == -1:
        return bytes((OP_1NEGATE,))
    if 1 <= n <= 16:
        return bytes((OP_1 + n - 1,))
    return push_data(script_num(n))


def p2wpkh_script(pubkey_hash: bytes) -> bytes:
    """Native P2WPKH scriptPubKey: ``OP_0 <20-byte key hash>`` (BIP 141)."""
    if len(pubkey_hash) != 20:
        raise ValueError("P2WPKH program must be 20 bytes")
    return b"\x00\x14" + pubkey_hash


def p2wpkh_for(key: PublicKey) -> bytes:
    return p2wpkh_script(key.hash160())


def p2wpkh_script_code(pubkey_hash: bytes) -> bytes:
    """BIP 143 scriptCode for P2WPKH: ``DUP HASH160 <hash> EQUALVERIFY CHECKSIG``."""
    if len(pubkey_hash) != 20:
        raise ValueError("P2WPKH program must be 20 bytes")
    return b"\x76\xa9\x14" + pubkey_hash + b"\x88\xac"


def p2wsh_script(witness_script: bytes) -> bytes:
    """Native P2WSH scriptPubKey: ``OP_0 <SHA-256(witness script)>`` (BIP 141)."""
    return b"\x00\x20" + sha256(witness_script)


def channel_script(payee: PublicKey, payer: PublicKey, expiry_height: int) -> bytes:
    """The channel's witness script (``specs/payments.md`` §4.1 Channel witness script, BIP 65)::

        OP_IF <payee> OP_CHECKSIGVERIFY
        OP_ELSE <expiry> OP_CHECKLOCKTIMEVERIFY OP_DROP
        OP_ENDIF <payer> OP_CHECKSIG
    """
    if not 1 <= expiry_height < LOCKTIME_THRESHOLD:
        raise ValueError("expiry must be a block height in [1, 500000000)")
    return b"".join(
        (
            bytes((OP_IF,)),
            push_data(payee.data),
            bytes((OP_CHECKSIGVERIFY, OP_ELSE)),
            push_int(expiry_height),
            bytes((OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_ENDIF)),
            push_data(payer.data),
            bytes((OP_CHECKSIG,)),
        )
    )


def witness_program(script_pubkey: bytes) -> tuple[int, bytes] | None:
    """(version, program) if ``script_pubkey`` is a BIP 141 witness program, else None."""
    n = len(script_pubkey)
    if n < 4 or n > 42:
        return None
    op = script_pubkey[0]
    if op != OP_0 and not OP_1 <= op <= OP_16:
        return None
    if script_pubkey[1] + 2 != n:
        return None
    version = 0 if op == OP_0 else op - OP_1 + 1
    return version, script_pubkey[2:]


def witness_program_script(version: int, program: bytes) -> bytes:
    """scriptPubKey for a witness ``version`` (0..16) and ``program`` (2..40 bytes)."""
    if not 0 <= version <= 16 or not 2 <= len(program) <= 40:
        raise ValueError("invalid witness version or program length")
    op = OP_0 if version == 0 else OP_1 + version - 1
    return bytes((op, len(program))) + program


def output_type(script_pubkey: bytes) -> str:
    """Classify an output as Bitcoin Core's standard types, or ``"nonstandard"``."""
    s = script_pubkey
    prog = witness_program(s)
    if prog is not None:
        version, program = prog
        if version == 0 and len(program) == 20:
            return "p2wpkh"
        if version == 0 and len(program) == 32:
            return "p2wsh"
        if version == 1 and len(program) == 32:
            return "p2tr"
        return "witness_unknown" if version != 0 else "nonstandard"
    if len(s) == 25 and s[:3] == b"\x76\xa9\x14" and s[23:] == b"\x88\xac":
        return "p2pkh"
    if len(s) == 23 and s[:2] == b"\xa9\x14" and s[22] == OP_EQUAL:
        return "p2sh"
    if s[:1] == bytes((OP_RETURN,)):
        return "nulldata"
    return "nonstandard"


def parse_pushes(script: bytes) -> list[bytes | int]:
    """Split a script into pushed data (``bytes``) and opcodes (``int``).

    Raises:
        DecodeError: a push runs past the end of the script.
    """
    out: list[bytes | int] = []
    i, n = 0, len(script)
    while i < n:
        op = script[i]
        i += 1
        if 0 < op < OP_PUSHDATA1:
            size = op
        elif op == OP_PUSHDATA1:
            if i + 1 > n:
                raise DecodeError("truncated PUSHDATA1")
            size, i = script[i], i + 1
        elif op == OP_PUSHDATA2:
            if i + 2 > n:
                raise DecodeError("truncated PUSHDATA2")
            size, i = int.from_bytes(script[i : i + 2], "little"), i + 2
        elif op == OP_PUSHDATA4:
            if i + 4 > n:
                raise DecodeError("truncated PUSHDATA4")
            size, i = int.from_bytes(script[i : i + 4], "little"), i + 4
        else:
            out.append(op)
            continue
        if i + size > n:
            raise DecodeError("push runs past the end of the script")
        out.append(script[i : i + size])
        i += size
    return out
