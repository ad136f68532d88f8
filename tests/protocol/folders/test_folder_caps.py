"""Folder capabilities: round trips, derivations, and refusal of typos and wrong kinds (specs/folders.md §4)."""

from __future__ import annotations

import pytest

from protocol.folders import CapError, ReadCap, VerifyCap, WriteCap, parse_cap, parse_read_cap, parse_write_cap

SEED = bytes(range(32))


def test_each_cap_round_trips_through_its_text() -> None:
    write = WriteCap(SEED)
    for cap in (write, write.read_cap, write.verify_cap):
        text = cap.to_string()
        assert parse_cap(text) == cap
        assert parse_cap(f"  {text}\n") == cap
    assert write.to_string().startswith("mu:folder-w:")
    assert write.read_cap.to_string().startswith("mu:folder-r:")
    assert write.verify_cap.to_string().startswith("mu:folder-v:")


def test_authority_flows_one_way() -> None:
    write = WriteCap(SEED)
    read = write.read_cap
    assert read.public_key == write.public_key == read.verify_cap.public_key
    assert read.chunk_secret == write.chunk_secret
    assert len({write.read_key, write.chunk_secret, write.seed, write.public_key}) == 4
    other = WriteCap(bytes(32))
    assert other.read_key != write.read_key and other.public_key != write.public_key


def test_secrets_stay_out_of_repr() -> None:
    write = WriteCap(SEED)
    assert SEED.hex() not in repr(write) and write.read_key.hex() not in repr(write.read_cap)
    assert repr(SEED) not in repr(write) and repr(write.read_key) not in repr(write.read_cap)


@pytest.mark.parametrize("position", [13, 30, -1])
def test_a_mistyped_character_fails_the_checksum(position: int) -> None:
    text = WriteCap(SEED).read_cap.to_string()
    swapped = "2" if text[position] != "2" else "3"
    typo = text[:position] + swapped + text[position + 1:] if position != -1 else text[:-1] + swapped
    with pytest.raises(CapError, match="checksum"):
        parse_cap(typo)


def test_a_link_of_one_kind_does_not_pass_as_another() -> None:
    write = WriteCap(SEED)
    body = write.read_cap.to_string().removeprefix("mu:folder-r:")
    with pytest.raises(CapError, match="checksum"):
        parse_cap("mu:folder-w:" + body)  # the checksum covers the prefix
    with pytest.raises(CapError, match="write link"):
        parse_write_cap(write.read_cap.to_string())
    with pytest.raises(CapError, match="verify link"):
        parse_read_cap(write.verify_cap.to_string())
    assert parse_read_cap(write.to_string()) == write.read_cap


@pytest.mark.parametrize("text, reason", [
    ("mu:folder-x:abc", "starts with"),
    ("mu:ABC#DEF", "starts with"),
    ("mu:folder-r:", "nothing after"),
    ("mu:folder-r:0OIl", "not base58"),
    ("mu:folder-r:" + "z" * 200, "at most"),
    ("mu:folder-r:2", "checksum"),
])
def test_malformed_links_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(CapError, match=reason):
        parse_cap(text)


def test_wrong_sizes_are_refused() -> None:
    with pytest.raises(CapError):
        WriteCap(b"short")
    with pytest.raises(CapError):
        ReadCap(bytes(31), bytes(32))
    with pytest.raises(CapError):
        VerifyCap(bytes(33))
