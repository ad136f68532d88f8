"""Placement rule: R closest node IDs to SHA-256(address)[:20] (specs/network.md §3)."""

from __future__ import annotations

import hashlib

import pytest

from protocol.fetch import DEFAULT_REPLICAS, FetchError, closest_nodes, dht_key, placement


def nid(i: int) -> bytes:
    return hashlib.sha256(b"node%d" % i).digest()[:20]


def test_dht_key_is_sha256_prefix() -> None:
    address = hashlib.sha256(b"chunk").digest()
    assert dht_key(address) == hashlib.sha256(address).digest()[:20]


def test_dht_key_rejects_bad_address() -> None:
    with pytest.raises(FetchError):
        dht_key(b"short")


def test_placement_matches_brute_force() -> None:
    nodes = [nid(i) for i in range(50)]
    for c in range(20):
        address = hashlib.sha256(b"c%d" % c).digest()
        key = int.from_bytes(dht_key(address), "big")
        brute = sorted(nodes, key=lambda n: int.from_bytes(n, "big") ^ key)[:DEFAULT_REPLICAS]
        assert placement(address, nodes) == brute


def test_closest_nodes_orders_by_xor() -> None:
    key = bytes(20)
    ids = [bytes(19) + bytes([v]) for v in (9, 1, 4, 2)]
    assert closest_nodes(key, ids, 3) == [bytes(19) + b"\x01", bytes(19) + b"\x02", bytes(19) + b"\x04"]


def test_placement_dedupes_and_caps() -> None:
    nodes = [nid(1), nid(1), nid(2)]
    assert len(placement(hashlib.sha256(b"x").digest(), nodes, replicas=3)) == 2


def test_placement_rejects_bad_inputs() -> None:
    address = hashlib.sha256(b"x").digest()
    with pytest.raises(FetchError):
        placement(address, [nid(1)], replicas=0)
    with pytest.raises(FetchError):
        placement(address, [b"\x00" * 19])
