"""Script builders: minimal pushes, script numbers, witness programs, the channel script."""

from __future__ import annotations

import pytest

from protocol.bitcoin import (
    DecodeError,
    PrivateKey,
    channel_script,
    output_type,
    p2wpkh_for,
    p2wsh_script,
    parse_pushes,
    push_data,
    push_int,
    script_num,
    sha256,
    witness_program,
)
from protocol.bitcoin.script import OP_CHECKLOCKTIMEVERIFY, OP_CHECKSIG, OP_CHECKSIGVERIFY, OP_DROP, OP_ELSE, OP_ENDIF, OP_IF

PAYER = PrivateKey.from_seed(b"payer").public_key
PAYEE = PrivateKey.from_seed(b"payee").public_key


@pytest.mark.parametrize(
    ("n", "encoded"),
    [(0, ""), (1, "01"), (127, "7f"), (128, "8000"), (255, "ff00"), (256, "0001"), (-1, "81"), (-128, "8080"),
     (500_000, "20a107"), (499_999_999, "ff64cd1d")],
)
def test_script_num(n: int, encoded: str) -> None:
    assert script_num(n).hex() == encoded


def test_push_int_and_push_data_are_minimal() -> None:
    assert push_int(0) == b"\x00"
    assert push_int(16) == b"\x60"
    assert push_int(-1) == b"\x4f"
    assert push_int(17) == b"\x01\x11"
    assert push_data(bytes(75))[:1] == b"\x4b"
    assert push_data(bytes(76))[:2] == b"\x4c\x4c"
    assert push_data(bytes(256))[:3] == b"\x4d\x00\x01"


def test_channel_script_layout() -> None:
    script = channel_script(PAYEE, PAYER, 800_000)
    assert parse_pushes(script) == [
        OP_IF, PAYEE.data, OP_CHECKSIGVERIFY, OP_ELSE, script_num(800_000),
        OP_CHECKLOCKTIMEVERIFY, OP_DROP, OP_ENDIF, PAYER.data, OP_CHECKSIG,
    ]
    assert channel_script(PAYEE, PAYER, 5)[37] == 0x55  # OP_5 for small heights
    with pytest.raises(ValueError):
        channel_script(PAYEE, PAYER, 500_000_000)
    with pytest.raises(ValueError):
        channel_script(PAYEE, PAYER, 0)


def test_witness_programs_and_types() -> None:
    wpkh = p2wpkh_for(PAYER)
    assert wpkh == b"\x00\x14" + PAYER.hash160()
    assert witness_program(wpkh) == (0, PAYER.hash160())
    assert output_type(wpkh) == "p2wpkh"
    wsh = p2wsh_script(b"\x51")
    assert wsh == b"\x00\x20" + sha256(b"\x51") and output_type(wsh) == "p2wsh"
    assert output_type(b"\x51\x20" + bytes(32)) == "p2tr"
    assert output_type(b"\x76\xa9\x14" + bytes(20) + b"\x88\xac") == "p2pkh"
    assert output_type(b"\xa9\x14" + bytes(20) + b"\x87") == "p2sh"
    assert output_type(b"\x6a\x01\x00") == "nulldata"
    assert output_type(b"\x00\x15" + bytes(21)) == "nonstandard"
    assert witness_program(b"\x00\x14" + bytes(19)) is None


def test_parse_pushes_rejects_overruns() -> None:
    for bad in (b"\x05ab", b"\x4c", b"\x4c\x05a", b"\x4d\x01", b"\x4e\x00\x00"):
        with pytest.raises(DecodeError):
            parse_pushes(bad)
