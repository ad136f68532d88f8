"""The paid GET's order on the host (specs/payments.md §Payment field of GET and PUT), in process.

A real on-disk store and ledger under ``PaidChunkServer``: the chunk is
read before the decision (its size sets the price) and its hash checked
only once the decision is to serve it, so a refused request costs no hash,
and a chunk that rotted on disk is refused with nothing recorded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from node.exchange._server import PaidChunkServer
from node.ledger import Ledger
from node.store import ChunkStore
from node.transport import RequestRefused
from protocol.payments import MIB, PaymentErrorCode
from protocol.payments.vocabulary import Direction
from protocol.wire import Chunk, ErrorCode, GetChunk
from tests.node.exchange.test_payee_groups import ALLOWANCE, CID, PEER, PRICE, open_book, paying


class OneSession:
    """What the handler asks of a session: the peer and the arrival order (one request at a time here)."""

    peer_node_id = PEER

    @asynccontextmanager
    async def in_arrival_order(self) -> AsyncIterator[None]:
        yield


def rot(store: ChunkStore, address: bytes) -> None:
    """Flip one byte of the chunk's file, as a failing disk would."""
    path = store.path_of(address)
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))


async def get(server: PaidChunkServer, address: bytes, total: int | None) -> Chunk | RequestRefused:
    message = GetChunk(request_id=1, address=address, payment=None if total is None else paying(total))
    try:
        reply = await server.handle_request(OneSession(), message)  # type: ignore[arg-type]
    except RequestRefused as exc:
        return exc
    assert isinstance(reply, Chunk)
    return reply


@pytest.fixture
def chunks() -> list[tuple[bytes, bytes]]:
    return [(hashlib.sha256(data).digest(), data) for data in (os.urandom(MIB) for _ in range(4))]


async def test_a_refused_get_is_decided_before_the_hash_and_a_rotten_chunk_is_never_charged(
        tmp_path: Path, chunks: list[tuple[bytes, bytes]]) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger, ChunkStore(tmp_path / "chunks") as store:
        for address, data in chunks:
            store.put(address, data)
        server = PaidChunkServer(store, open_book(ledger))
        (first, _), (second, _), (rotten, _), (sound, sound_data) = chunks
        free = ALLOWANCE // PRICE
        assert free == 2
        for address in (first, second):  # within the free allowance
            assert isinstance(await get(server, address, None), Chunk)
        rot(store, rotten)
        owed = (free + 1) * PRICE - ALLOWANCE
        # Past the allowance with no payment: refused for payment, whatever the bytes on disk.
        unpaid = await get(server, rotten, None)
        assert isinstance(unpaid, RequestRefused) and unpaid.code == PaymentErrorCode.INSUFFICIENT_PAYMENT
        assert unpaid.owed == owed
        # Paid for, but rotten: refused as not found, and nothing of it is recorded.
        refused = await get(server, rotten, owed)
        assert isinstance(refused, RequestRefused) and refused.code == ErrorCode.NOT_FOUND
        account = ledger.account(PEER.hex(), Direction.IN)
        assert (account.consumed, account.paid) == (free * PRICE, 0)
        assert [p.chunk for p in ledger.payments()] == [first.hex(), second.hex()]
        # The same payment buys a sound chunk: the refusal left the channel's total where it was.
        paid = await get(server, sound, owed)
        assert isinstance(paid, Chunk) and paid.data == sound_data
        record = ledger.channel(str(CID))
        assert record is not None and record.total == owed
        assert server.served == free + 1
