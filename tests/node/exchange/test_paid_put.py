"""Paid PUT to a `mu node`: stored only once paid, at the storage price; bad bytes cost nothing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from node.ledger import LEDGER_FILE, Ledger
from node.store import STORE_DIR, ChunkStore
from node.transport import RequestError
from protocol.payments import PaymentErrorCode, PriceTooHigh, chunk_price
from protocol.wire import ErrorCode
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import open_fetcher
from tests.helpers.node import open_mu_node

CHUNK = 32 * 1024
PUT_PRICE = 8_192  # 256 sats per 32 KiB chunk


async def test_paid_put_stores_after_payment(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    chunks = [os.urandom(CHUNK) for _ in range(4)]
    price = chunk_price(CHUNK, PUT_PRICE)
    async with open_mu_chain(tmp_path / "chain") as chain:
        args = ["--price-put", str(PUT_PRICE), "--free-allowance", "0", "--quota", str(3 * CHUNK + 100)]
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            # Without a channel the PUT is refused, with the amount owed, and nothing is stored.
            with pytest.raises(RequestError) as info:
                await link.session.put_chunk(hashlib.sha256(chunks[0]).digest(), chunks[0])
            assert info.value.code == PaymentErrorCode.INSUFFICIENT_PAYMENT and info.value.owed == price
            await fetcher.open_channel(link, capacity=20_000)
            for chunk in chunks[:3]:
                assert await fetcher.payer.put(link, hashlib.sha256(chunk).digest(), chunk) is True
            # Past the quota: refused before any payment is taken.
            with pytest.raises(RequestError) as info:
                await fetcher.payer.put(link, hashlib.sha256(chunks[3]).digest(), chunks[3])
            assert info.value.code == ErrorCode.OVER_QUOTA
            # Bytes that do not hash to the address: refused before any charge.
            with pytest.raises(RequestError) as info:
                await link.session.put_chunk(hashlib.sha256(b"other").digest(), chunks[0])
            assert info.value.code == ErrorCode.CORRUPT_DATA
            assert link.channel is not None and link.machine.acknowledged == 3 * price
            # A fetcher whose maximum price is below the host's refuses to deal at all.
            fetcher.payer.max_price_per_mib_put = PUT_PRICE - 1
            with pytest.raises(PriceTooHigh):
                await fetcher.payer.link(link.session)
    with ChunkStore(host_dir / STORE_DIR) as store:
        assert all(store.get(hashlib.sha256(c).digest()) == c for c in chunks[:3])
        assert not store.has(hashlib.sha256(chunks[3]).digest())
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        payments = ledger.payments()
    assert [(p.kind, p.price, p.amount) for p in payments] == [("put", price, price)] * 3
