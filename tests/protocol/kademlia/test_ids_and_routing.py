"""IDs, the XOR metric and the routing table (specs/dht.md §3, §5)."""

from __future__ import annotations

import hashlib

import pytest

from protocol.kademlia.ids import Contact, KademliaError, bucket_index, distance
from protocol.fetch import FetchError, dht_key
from protocol.kademlia.routing import AddStatus, RoutingTable

OWN = bytes(20)


def cid(n: int) -> bytes:
    return n.to_bytes(20, "big")


def contact(n: int, host: str = "127.0.0.1", port: int | None = None) -> Contact:
    """Contact ``n``, at a port of its own unless one is given (one contact per IP:port, §5.3)."""
    return Contact(cid(n), host, port if port is not None else 1 + n % 65521)


def test_distance_and_buckets() -> None:
    assert distance(cid(5), cid(3)) == 6
    assert distance(cid(7), cid(7)) == 0
    assert bucket_index(OWN, cid(1)) == 0
    assert bucket_index(OWN, cid(2)) == bucket_index(OWN, cid(3)) == 1
    assert bucket_index(OWN, b"\xff" * 20) == 159
    with pytest.raises(KademliaError):
        bucket_index(OWN, OWN)


def test_chunk_key_is_truncated_sha256() -> None:
    address = bytes(range(32))
    assert dht_key(address) == hashlib.sha256(address).digest()[:20]
    # Only a chunk address (32 bytes) has a DHT key; the old any-bytes helper is gone.
    with pytest.raises(FetchError):
        dht_key(b"")


@pytest.mark.parametrize("item", [
    [b"x" * 19, "127.0.0.1", 1], [b"x" * 20, "", 1], [b"x" * 20, "a b", 1], [b"x" * 20, "h", 0],
    [b"x" * 20, "127.0.0.1", 70000], [b"x" * 20, "127.0.0.1", True], [b"x" * 20, "h"], "abc",
    [b"x" * 20, 5, 1], [b"x" * 20, "localhost", 1], [b"x" * 20, "999.1.1.1", 1],
])
def test_contact_from_wire_rejects(item: object) -> None:
    with pytest.raises(KademliaError):
        Contact.from_wire(item)


def test_contact_wire_round_trip() -> None:
    c = Contact(b"\x01" * 20, "10.0.0.1", 9)
    assert Contact.from_wire(c.to_wire()) == c


def test_lru_order_ping_before_evict_and_replacements() -> None:
    table = RoutingTable(OWN, k=3, replacement_cache_size=2, loopback_devnet=True)
    # IDs 8..15 all fall in bucket 3.
    for n in (8, 9, 10):
        assert table.add(contact(n), 1.0).status is AddStatus.ADDED
    assert table.add(contact(8), 2.0).status is AddStatus.UPDATED  # 8 is now most recently seen
    result = table.add(contact(11), 3.0)
    assert result.status is AddStatus.CACHED and result.ping == contact(9)
    # While that ping runs, more newcomers only wait; the cache keeps the newest 2.
    assert table.add(contact(12), 3.0).ping is None
    assert table.add(contact(13), 3.0).ping is None
    # The head answered: it stays, newcomers stay cached.
    table.seen(cid(9), 4.0)
    assert {c.node_id for c in table.contacts()} == {cid(8), cid(9), cid(10)}
    # Next newcomer: the head is now 10; it fails, the newest replacement takes its place.
    result = table.add(contact(14), 5.0)
    assert result.ping == contact(10)
    table.remove(cid(10))
    assert {c.node_id for c in table.contacts()} == {cid(8), cid(9), cid(14)}
    table.remove(cid(8))
    assert {c.node_id for c in table.contacts()} == {cid(9), cid(14), cid(13)}
    table.remove(cid(9))  # 12 was pushed out of the 2-entry cache by 13 and 14
    assert {c.node_id for c in table.contacts()} == {cid(14), cid(13)}


def test_known_id_from_another_address_pings_the_known_one_first() -> None:
    table = RoutingTable(OWN)
    table.add(contact(5, port=1), 0.0)
    result = table.add(contact(5, port=2), 0.0)
    assert result.status is AddStatus.MOVED and result.ping == contact(5, port=1)
    assert table.get(cid(5)) == contact(5, port=1)  # kept until it fails the ping
    table.remove(cid(5))  # it did not answer: the node moved
    assert table.add(contact(5, port=2), 1.0).status is AddStatus.ADDED
    assert table.get(cid(5)) == contact(5, port=2)
    assert table.add(Contact(OWN, "127.0.0.1", 1), 0.0).status is AddStatus.REJECTED


def test_public_key_upgrade_is_kept() -> None:
    table = RoutingTable(OWN)
    table.add(contact(5), 0.0)
    table.add(Contact(cid(5), "127.0.0.1", contact(5).port, b"k" * 32), 1.0)
    table.add(contact(5), 2.0)  # a plain sighting does not erase the proof
    assert table.get(cid(5)).public_key == b"k" * 32  # type: ignore[union-attr]


def test_prefix_limits() -> None:
    table = RoutingTable(OWN, max_per_prefix_per_bucket=2, max_per_prefix_per_table=3)
    high = 1 << 150
    assert table.add(contact(high + 1, "10.0.0.1"), 0).status is AddStatus.ADDED
    assert table.add(contact(high + 2, "10.0.0.2"), 0).status is AddStatus.ADDED
    assert table.add(contact(high + 3, "10.0.0.3"), 0).status is AddStatus.REJECTED  # bucket limit, same /24
    assert table.add(contact(1 << 140, "10.0.0.1", port=4001), 0).status is AddStatus.ADDED
    assert table.add(contact(1 << 130, "10.0.0.9"), 0).status is AddStatus.REJECTED  # table limit, same /24
    assert table.add(contact(1 << 130, "10.0.1.1"), 0).status is AddStatus.ADDED  # another /24
    table.remove(cid(1 << 140))
    assert table.add(contact(1 << 120, "10.0.0.1", port=4002), 0).status is AddStatus.ADDED
    # IPv6 addresses count by their /64.
    assert table.add(contact(high + 20, "2001:db8::1"), 0).status is AddStatus.ADDED
    assert table.add(contact(high + 21, "2001:db8::2"), 0).status is AddStatus.ADDED
    assert table.add(contact(high + 22, "2001:db8::3"), 0).status is AddStatus.REJECTED
    # Loopback counts like any address unless the table is a loopback devnet's.
    strict = RoutingTable(OWN, max_per_prefix_per_bucket=1)
    strict.add(contact(high + 1, port=1), 0)
    assert strict.add(contact(high + 2, port=2), 0).status is AddStatus.REJECTED
    devnet = RoutingTable(OWN, loopback_devnet=True)
    for i in range(15):
        assert devnet.add(contact(high + 10 + i, port=1000 + i), 0).status is AddStatus.ADDED


def test_one_contact_per_ip_and_port() -> None:
    table = RoutingTable(OWN)
    assert table.add(contact(5, "10.0.0.1", 4000), 0.0).status is AddStatus.ADDED
    # A new ID at a known IP:port: the holder is to be pinged, the newcomer is not added.
    result = table.add(contact(1 << 100, "10.0.0.1", 4000), 1.0)
    assert result.status is AddStatus.ADDRESS_TAKEN and result.ping == contact(5, "10.0.0.1", 4000)
    assert table.holder(("10.0.0.1", 4000)) == contact(5, "10.0.0.1", 4000) and len(table) == 1
    # The holder failed its ping: the newcomer may take the address.
    table.remove(cid(5))
    assert table.add(contact(1 << 100, "10.0.0.1", 4000), 2.0).status is AddStatus.ADDED
    assert table.holder(("10.0.0.1", 4000)) == contact(1 << 100, "10.0.0.1", 4000)


def test_closest_and_refresh_helpers() -> None:
    table = RoutingTable(OWN, loopback_devnet=True)
    for n in (1, 2, 3, 100, 1000, 1 << 159):
        table.add(contact(n), 0.0)
    assert [c.node_id for c in table.closest(cid(3), 3)] == [cid(3), cid(2), cid(1)]
    assert [c.node_id for c in table.closest(cid(3), 2, exclude=cid(3))] == [cid(2), cid(1)]
    assert 0 in table.stale_buckets(10.0, 5.0) and table.stale_buckets(3.0, 5.0) == []
    for index in (0, 7, 159):
        assert bucket_index(OWN, table.id_in_bucket(index, b"\xff" * 20)) == index
        assert bucket_index(OWN, table.id_in_bucket(index, bytes(20))) == index
    table.touch_bucket(cid(100), 20.0)
    assert 6 not in table.stale_buckets(22.0, 5.0)
