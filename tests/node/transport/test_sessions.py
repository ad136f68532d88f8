"""Two real transports on 127.0.0.1 with real ChunkStores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from node.store import ChunkStore
from node.transport import (
    BadChunk,
    ChunkServer,
    Limits,
    RequestError,
    RequestHandler,
    Session,
    SessionBroken,
    open_transport,
)
from node.transport._session import MAX_SEND_QUEUE
from protocol.wire import Chunk, ErrorCode, GetChunk, Have, HaveReply, Message
from tests.helpers.transport import chunk, identity, payment_key


async def test_get_put_have_over_one_reused_session(tmp_path: Path) -> None:
    store_a = ChunkStore(tmp_path / "a", quota_bytes=10_000_000)
    store_b = ChunkStore(tmp_path / "b", quota_bytes=10_000_000)
    addr1, data1 = chunk(1, 300_000)
    store_b.put(addr1, data1)
    async with (
        open_transport(identity(1), ChunkServer(store_a), payment_key=payment_key(1), terms={"price": 3}) as ta,
        open_transport(identity(2), ChunkServer(store_b), payment_key=payment_key(2)) as tb,
    ):
        session = await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)
        assert session.peer_node_id == identity(2).node_id
        assert session.peer_hello.tcp_port == tb.port
        assert session.peer_hello.payment_key == payment_key(2)
        with trio.fail_after(10):
            assert await session.get_chunk(addr1) == data1
            addr2, data2 = chunk(2, 5000)
            assert await session.put_chunk(addr2, data2) is True
            assert await session.put_chunk(addr2, data2) is False
            assert store_b.get(addr2) == data2
            missing, _ = chunk(3)
            assert await session.have((addr1, missing, addr2)) == (True, False, True)
            with pytest.raises(RequestError) as info:
                await session.get_chunk(missing)
            assert info.value.code == ErrorCode.NOT_FOUND
            with pytest.raises(RequestError) as info:
                await session.put_chunk(missing, data2)
            assert info.value.code == ErrorCode.CORRUPT_DATA
        assert await ta.connect(identity(2).node_id, "127.0.0.1", tb.port) is session
        # The responder sees the initiator's HELLO, terms included.
        (inbound,) = tb.sessions()
        assert inbound.peer_node_id == identity(1).node_id
        assert inbound.peer_hello.terms == {"price": 3}


async def test_quota_full_store_answers_over_quota(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "b", quota_bytes=1000)
    async with (
        open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "a")), payment_key=payment_key(1)) as ta,
        open_transport(identity(2), ChunkServer(store), payment_key=payment_key(2)) as tb,
    ):
        session = await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)
        addr, data = chunk(5, 4000)
        with pytest.raises(RequestError) as info:
            await session.put_chunk(addr, data)
        assert info.value.code == ErrorCode.OVER_QUOTA


async def test_a_peer_that_is_not_the_node_dialled_is_refused(tmp_path: Path) -> None:
    async with (
        open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "a")), payment_key=payment_key(1)) as ta,
        open_transport(identity(2), ChunkServer(ChunkStore(tmp_path / "b")), payment_key=payment_key(2)) as tb,
    ):
        with pytest.raises(SessionBroken) as info:
            await ta.connect(identity(3).node_id, "127.0.0.1", tb.port)
        assert info.value.code == ErrorCode.IDENTITY_MISMATCH
        assert ta.sessions() == []


async def test_thousand_concurrent_gets_on_one_session(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "b")
    chunks = [chunk(i, 2000 + i) for i in range(50)]
    for address, data in chunks:
        store.put(address, data)
    results: dict[int, bytes] = {}
    async with (
        open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "a")), payment_key=payment_key(1)) as ta,
        open_transport(identity(2), ChunkServer(store), payment_key=payment_key(2), limits=Limits(max_inflight_requests=16)) as tb,
    ):
        session = await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)

        async def fetch(i: int) -> None:
            results[i] = await session.get_chunk(chunks[i % 50][0])

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(1000):
                    nursery.start_soon(fetch, i)
        assert session.pending_requests == 0
    assert len(results) == 1000
    assert all(results[i] == chunks[i % 50][1] for i in range(1000))


class LyingServer:
    """Answers every GET with bytes that do not match the address."""

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        assert isinstance(message, GetChunk)
        return Chunk(request_id=message.request_id, address=message.address, data=b"not it")


async def test_receiver_rejects_bytes_that_do_not_hash_to_the_address(tmp_path: Path) -> None:
    async with (
        open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "a")), payment_key=payment_key(1)) as ta,
        open_transport(identity(2), LyingServer(), payment_key=payment_key(2)) as tb,
    ):
        session = await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)
        with pytest.raises(BadChunk):
            await session.get_chunk(chunk(1)[0])


class GatedServer:
    """Holds every request until released; records peak concurrency."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.active = 0
        self.peak = 0
        self.arrived = 0
        self.two_arrived = trio.Event()
        self.one_arrived = trio.Event()

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        assert isinstance(message, GetChunk)
        self.active += 1
        self.arrived += 1
        self.peak = max(self.peak, self.active)
        self.one_arrived.set()
        if self.arrived == 2:
            self.two_arrived.set()
        await self.release.wait()
        self.active -= 1
        return Chunk(request_id=message.request_id, address=message.address, data=b"")


@asynccontextmanager
async def session_to(tmp_path: Path, handler: RequestHandler, limits: Limits | None = None) -> AsyncIterator[Session]:
    """A session to a peer that serves with ``handler`` (and ``limits``, if given)."""
    async with (
        open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "a")), payment_key=payment_key(1)) as ta,
        open_transport(identity(2), handler, payment_key=payment_key(2), limits=limits) as tb,
    ):
        yield await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)


@asynccontextmanager
async def gated_session(tmp_path: Path, limits: Limits | None = None) -> AsyncIterator[tuple[Session, GatedServer]]:
    """A session to a peer whose handler is a ``GatedServer`` (with ``limits``, if given)."""
    gated = GatedServer()
    async with session_to(tmp_path, gated, limits) as session:
        yield session, gated


async def test_back_pressure_bounds_requests_in_service(tmp_path: Path) -> None:
    address = chunk(1)[0]
    async with gated_session(tmp_path, Limits(max_inflight_requests=2)) as (session, gated):
        replies: list[Message] = []

        async def ask() -> None:
            replies.append(await session.request(GetChunk(request_id=0, address=address)))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(ask)
                await gated.two_arrived.wait()
                # Ten requests are on the wire but only two are being served.
                await trio.testing.wait_all_tasks_blocked()
                assert gated.active == 2
                gated.release.set()
        assert len(replies) == 10 and gated.peak == 2


async def test_timeouts_belong_to_the_caller_and_late_replies_are_dropped(tmp_path: Path) -> None:
    address = chunk(1)[0]
    async with gated_session(tmp_path) as (session, gated):
        with trio.move_on_after(0.2) as scope:
            await session.request(GetChunk(request_id=0, address=address))
        assert scope.cancelled_caught and session.pending_requests == 0
        gated.release.set()
        with trio.fail_after(10):
            reply = await session.request(GetChunk(request_id=0, address=address))
        assert isinstance(reply, Chunk) and session.is_open


async def test_idle_session_is_closed(tmp_path: Path) -> None:
    async with (
        open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "a")), payment_key=payment_key(1)) as ta,
        open_transport(
            identity(2), ChunkServer(ChunkStore(tmp_path / "b")), payment_key=payment_key(2), limits=Limits(idle_timeout=0.3)
        ) as tb,
    ):
        session = await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)
        with trio.fail_after(10):
            await session.wait_closed()
        assert not session.is_open
        # A new connect makes a fresh session.
        again = await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)
        assert again is not session and again.is_open


async def test_shutdown_fails_pending_requests_cleanly(tmp_path: Path) -> None:
    gated = GatedServer()
    caught: list[BaseException] = []
    async with open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "a")), payment_key=payment_key(1)) as ta:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                async with open_transport(identity(2), gated, payment_key=payment_key(2)) as tb:
                    session = await ta.connect(identity(2).node_id, "127.0.0.1", tb.port)

                    async def ask() -> None:
                        try:
                            await session.request(GetChunk(request_id=0, address=chunk(1)[0]))
                        except SessionBroken as exc:
                            caught.append(exc)

                    nursery.start_soon(ask)
                    await gated.one_arrived.wait()
                # Leaving tb's block closed its sessions: the pending request breaks.
            await session.wait_closed()
    assert len(caught) == 1 and not session.is_open
    assert tb.session_count == 0


async def test_meanwhile_overlaps_the_round_trip_and_its_error_ends_the_request(tmp_path: Path) -> None:
    """``request(meanwhile=...)`` runs the caller's work once the request is queued, while the peer
    holds it; the reply is awaited after.  An error of ``meanwhile`` ends the request cleanly."""
    address = chunk(1)[0]
    async with gated_session(tmp_path) as (session, gated):
        seen: list[int] = []

        async def meanwhile() -> None:
            await gated.one_arrived.wait()  # the request left before the reply is awaited
            seen.append(session.pending_requests)
            gated.release.set()

        with trio.fail_after(10):
            reply = await session.request(GetChunk(request_id=0, address=address), meanwhile=meanwhile)
        assert isinstance(reply, Chunk) and seen == [1] and gated.arrived == 1

        async def fails() -> None:
            raise OSError("disk full")

        with trio.fail_after(10), pytest.raises(OSError, match="disk full"):
            await session.request(GetChunk(request_id=0, address=address), meanwhile=fails)
        assert session.pending_requests == 0 and session.is_open


class OrderedServer:
    """Answers GETs after an ordered step; records the order of the ordered steps."""

    def __init__(self) -> None:
        self.ordered: list[int] = []

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        assert isinstance(message, GetChunk)
        await trio.lowlevel.checkpoint()  # handler tasks interleave before their ordered step
        async with session.in_arrival_order():
            await trio.lowlevel.checkpoint()
            self.ordered.append(message.request_id)
        return Chunk(request_id=message.request_id, address=message.address, data=b"")


async def test_requests_pass_their_ordered_step_in_arrival_order(tmp_path: Path) -> None:
    """GETs sent in a burst reach the handler's ordered step in the order they arrived,
    although trio starts their handler tasks in whatever order it likes."""
    server = OrderedServer()
    address = chunk(1)[0]
    async with session_to(tmp_path, server) as session:
        with trio.fail_after(20):
            for _ in range(10):  # bursts of 20: request ids are given, and sent, in call order
                async with trio.open_nursery() as nursery:
                    for _ in range(20):
                        nursery.start_soon(session.request, GetChunk(request_id=0, address=address))
        assert len(server.ordered) == 200
        assert server.ordered == sorted(server.ordered)


class BigChunkServer:
    """Serves 1 MiB chunks from memory and answers HAVE: big records and small ones on one session."""

    def __init__(self, chunks: dict[bytes, bytes]) -> None:
        self.chunks = chunks

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        if isinstance(message, Have):
            return HaveReply(request_id=message.request_id, present=tuple(a in self.chunks for a in message.addresses))
        assert isinstance(message, GetChunk)
        return Chunk(request_id=message.request_id, address=message.address, data=self.chunks[message.address])


async def test_records_a_socket_takes_in_part_leave_whole_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever of a 1 MiB record the socket does not take at once, the writer
    finishes before any later record (small replies interleave only between records)."""
    import node.transport._session as session_module

    real_write = session_module.os.write
    writes: list[int] = []

    def short_write(fd: int, data: memoryview) -> int:  # a socket that takes at most 64 KiB per call
        written = real_write(fd, data[:65536])
        writes.append(written)
        return written

    monkeypatch.setattr(session_module.os, "write", short_write)
    chunks = dict(chunk(i, 1 << 20) for i in range(4))
    addresses = list(chunks)
    async with session_to(tmp_path, BigChunkServer(chunks)) as session:
        got: list[tuple[bytes, bytes]] = []

        async def fetch(address: bytes) -> None:
            got.append((address, await session.get_chunk(address)))
            assert await session.have((address, bytes(32))) == (True, False)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(fetch, addresses[i % 4])
        assert session.is_open
    assert len(got) == 16 and all(chunks[address] == data for address, data in got)
    assert len(writes) > 16 * 16  # each 1 MiB record took at least 16 writes


async def test_queue_room_waits_for_a_place_in_the_send_queue(tmp_path: Path) -> None:
    """``can_queue`` is False while the send queue is full and ``queue_room`` returns once the
    writer has taken from it: a paid request waits there before it signs (specs/payments.md §Paid window)."""
    address = chunk(1)[0]
    async with gated_session(tmp_path) as (session, gated):
        assert session.can_queue()
        # Filled without a checkpoint: the writer cannot take any meanwhile.
        for _ in range(MAX_SEND_QUEUE + 1):
            try:
                session._outgoing_send.send_nowait(Have(request_id=0, addresses=(address,)))
            except trio.WouldBlock:
                break
        assert not session.can_queue()
        with trio.fail_after(10):
            await session.queue_room()
        assert session.can_queue()
        gated.release.set()
        session.close()
        assert session.can_queue()  # a closed session fails a request at once: nothing to wait for
        with trio.fail_after(10):
            await session.queue_room()
