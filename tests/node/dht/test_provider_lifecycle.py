"""Providers republish before expiry; expired records are dropped (issue 6, Deliver 3).

The nodes share a hand-moved Unix clock (record expiry is wall time), so no
test waits for real time to pass.
"""

from __future__ import annotations

import secrets
from contextlib import AsyncExitStack

from node.dht import ContactInfo, open_dht
from protocol.fetch import dht_key
from protocol.identity import Identity


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_republish_and_expiry() -> None:
    clock = Clock()
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(open_dht(Identity(secrets.token_bytes(32)), wall_clock=clock,
                                                     contact=ContactInfo(tcp_port=7000 + i), loopback_devnet=True))
            for i in range(6)
        ]
        for n in nodes[1:]:
            await n.bootstrap([("127.0.0.1", nodes[0].port)])
        provider, reader = nodes[1], nodes[4]
        key = dht_key(b"chunk address".ljust(32, b"\0"))
        first = await provider.announce_provider(key, terms={"price_sat_per_mib": 2}, ttl=1000)
        assert len(first.stored_at) == 5 and first.record.tcp_port == 7001

        # Before half the lifetime nothing is due.
        clock.now += 400
        assert await provider.ops.republish() == 0
        # Past half of it the record goes out again with a later expiry.
        clock.now += 200
        assert await provider.ops.republish() == 1
        (record,) = await reader.get_providers(key)
        assert record.expires_at == first.record.expires_at + 600
        assert all(n.providers.get(key, clock.now)[0].expires_at == record.expires_at for n in nodes[2:])

        # A withdrawn record is not republished; once expired it is dropped everywhere.
        provider.withdraw_provider(key)
        clock.now = record.expires_at + 1
        assert await provider.ops.republish() == 0
        assert await reader.get_providers(key) == []
        assert all(n.providers.expire(clock.now) == 1 for n in nodes)
