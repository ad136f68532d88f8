"""Properties of the routing table and the lookup (specs/dht.md §5, §6)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol.kademlia.ids import K, Contact, bucket_index, distance
from protocol.kademlia.lookup import Lookup
from protocol.kademlia.routing import RoutingTable, address_prefix

ids = st.binary(min_size=20, max_size=20)
hosts = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "127.0.0.1", "192.0.2.9"])
ports = st.integers(min_value=1000, max_value=1003)


@settings(max_examples=60, deadline=None)
@given(own=ids, ops=st.lists(st.tuples(st.sampled_from(["add", "seen", "remove"]), ids, hosts, ports), max_size=300),
       target=ids, devnet=st.booleans())
def test_table_invariants(own: bytes, ops: list[tuple[str, bytes, str, int]], target: bytes, devnet: bool) -> None:
    table = RoutingTable(own, k=4, replacement_cache_size=3, loopback_devnet=devnet)
    for step, (op, node_id, host, port) in enumerate(ops):
        if op == "add" and node_id != own:
            table.add(Contact(node_id, host, port), float(step))
        elif op == "seen":
            table.seen(node_id, float(step))
        else:
            table.remove(node_id)
    contacts = table.contacts()
    assert own not in {c.node_id for c in contacts}
    assert len({c.node_id for c in contacts}) == len(contacts)
    # At most one contact per IP:port (specs/dht.md §5.3 Address limits).
    assert len({c.address for c in contacts}) == len(contacts)
    per_bucket: dict[int, int] = {}
    per_prefix: dict[str, int] = {}
    per_prefix_bucket: dict[tuple[str, int], int] = {}
    for c in contacts:
        b = bucket_index(own, c.node_id)
        per_bucket[b] = per_bucket.get(b, 0) + 1
        if not (devnet and c.host == "127.0.0.1"):
            prefix = address_prefix(c.host)
            per_prefix[prefix] = per_prefix.get(prefix, 0) + 1
            per_prefix_bucket[prefix, b] = per_prefix_bucket.get((prefix, b), 0) + 1
    assert all(n <= 4 for n in per_bucket.values())
    assert all(n <= table.max_per_prefix_per_table for n in per_prefix.values())
    assert all(n <= table.max_per_prefix_per_bucket for n in per_prefix_bucket.values())
    brute = sorted(contacts, key=lambda c: distance(c.node_id, target))[:K]
    assert table.closest(target, K) == brute


@settings(max_examples=40, deadline=None)
@given(node_ids=st.lists(ids, min_size=1, max_size=K, unique=True), target=ids, data=st.data())
def test_lookup_over_full_knowledge_returns_brute_force(node_ids: list[bytes], target: bytes, data: st.DataObject) -> None:
    """When every reply names every other node (networks of at most k nodes), the
    lookup returns the exact 5 closest live nodes, whatever subset is dead and
    in whatever order replies arrive."""
    contacts = {i: Contact(i, "127.0.0.1", 1 + n) for n, i in enumerate(node_ids)}
    dead = set(data.draw(st.lists(st.sampled_from(node_ids), max_size=len(node_ids) // 2)))
    searcher = b"\x00" * 19 + b"\x01"
    if searcher in contacts:
        return
    seeds = list(contacts.values())[:3]
    # With every seed dead nothing else can be learnt: the claim needs one live seed.
    assume(any(c.node_id not in dead for c in seeds))
    lookup = Lookup(target, seeds, own_id=searcher, k=5, alpha=3)
    now = 0.0
    while True:
        lookup.next_requests(now)
        pending = lookup.in_flight
        if lookup.done or not pending:
            break
        c = data.draw(st.sampled_from(pending))
        if c.node_id in dead:
            lookup.on_failure(c.node_id)
        else:
            others = sorted((x for x in contacts.values() if x.node_id != c.node_id),
                            key=lambda x: distance(x.node_id, target))
            lookup.on_response(c.node_id, others)
        now += 0.01
    live = sorted((i for i in node_ids if i not in dead), key=lambda i: distance(i, target))
    assert [c.node_id for c in lookup.result()] == live[:5]
