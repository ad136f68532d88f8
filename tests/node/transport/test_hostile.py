"""Hostile peers: flipped bytes, the handshake budget, stalled handshakes, garbage floods."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from node.store import ChunkStore
from node.transport import ChunkServer, Limits, open_transport
from protocol.identity import Identity
from protocol.wire import (
    NEED_DATA,
    Chunk,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorMessage,
    GetChunk,
    Hello,
    RemoteProtocolError,
    Role,
    SessionEstablished,
)
from tests.helpers.transport import chunk, identity, payment_key

ROOT = Path(__file__).resolve().parents[3]
# The garbage flood may raise the node's peak RSS by at most this much
# (specs/wire.md §8: per-connection buffers are bounded; nothing queues).
GARBAGE_MEMORY_BOUND = 64 * 1024 * 1024


@functools.lru_cache(maxsize=None)
def cached_identity(n: int) -> Identity:
    return identity(n)


async def raw_session(port: int, node_id: bytes, n: int = 50) -> tuple[trio.SocketStream, Connection]:
    """A hand-driven client: real socket, our own Connection, no transport."""
    ident = cached_identity(n)
    conn = Connection(
        Role.INITIATOR,
        identity=ident,
        static_key=os.urandom(32),
        ephemeral_key=os.urandom(32),
        hello=Hello(
            version=1, node_id=ident.node_id, identity_key=ident.public_key, tcp_port=0, udp_port=0,
            payment_key=payment_key(n),
        ),
        expected_node_id=node_id,
    )
    stream = await dial(port)
    while True:
        event = conn.next_event()
        out = conn.data_to_send()
        if out:
            await stream.send_all(out)
        if isinstance(event, SessionEstablished):
            return stream, conn
        assert event is NEED_DATA
        conn.receive_data(await stream.receive_some(65536))


async def read_events(stream: trio.SocketStream, conn: Connection) -> list[object]:
    """Read until EOF; return events (a RemoteProtocolError ends the list)."""
    events: list[object] = []
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            events.append(exc)
            return events
        if event is NEED_DATA:
            try:
                conn.receive_data(await stream.receive_some(65536))
            except trio.BrokenResourceError:
                conn.receive_data(b"")
            continue
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


async def test_flipped_byte_ends_the_session_with_a_logged_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ChunkStore(tmp_path / "s")
    address, data = chunk(1)
    store.put(address, data)
    caplog.set_level(logging.INFO, logger="mu.transport")
    async with open_transport(identity(2), ChunkServer(store), payment_key=payment_key(2)) as node:
        stream, conn = await raw_session(node.port, identity(2).node_id)
        with trio.fail_after(10):
            await stream.send_all(conn.send(GetChunk(request_id=7, address=address)))
            while (event := conn.next_event()) is NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            assert event == Chunk(request_id=7, address=address, data=data)
            (server_side,) = node.sessions()
            record = bytearray(conn.send(GetChunk(request_id=8, address=address)))
            record[20] ^= 0x01
            await stream.send_all(record)
            events = await read_events(stream, conn)
        assert isinstance(events[0], ErrorMessage) and events[0].code == ErrorCode.DECRYPT_FAILED
        assert isinstance(events[-1], ConnectionClosed)
        with trio.fail_after(10):
            await server_side.wait_closed()
        assert node.session_count == 0
    errors = [r for r in caplog.records if r.name == "mu.transport" and r.levelno >= logging.ERROR]
    assert errors and "DECRYPT_FAILED" in errors[0].getMessage()


async def test_handshake_budget_evicts_the_oldest_and_times_out(tmp_path: Path) -> None:
    limits = Limits(max_handshakes=3, handshake_timeout=0.5)
    async with open_transport(identity(2), ChunkServer(ChunkStore(tmp_path / "s")), payment_key=payment_key(2), limits=limits) as node:
        idle = [await trio.open_tcp_stream("127.0.0.1", node.port) for _ in range(3)]
        with trio.fail_after(10):
            while node.pending_handshakes < 3:  # the listener has taken all three
                await trio.sleep(0)
        extra = await trio.open_tcp_stream("127.0.0.1", node.port)
        with trio.fail_after(10):
            # The fourth pending handshake from this address evicts the oldest at once.
            assert await idle[0].receive_some(10) == b""
            # The other silent ones are dropped when the handshake timeout passes.
            for stream in [*idle[1:], extra]:
                assert await stream.receive_some(10) == b""
        assert node.evicted_handshakes == 1 and node.failed_handshakes == 3
        # A real peer gets in.
        stream, conn = await raw_session(node.port, identity(2).node_id)
        assert conn.peer_node_id == identity(2).node_id
        await stream.aclose()


async def test_sessions_are_bounded_per_node_id_not_per_address(tmp_path: Path) -> None:
    async with open_transport(identity(2), ChunkServer(ChunkStore(tmp_path / "s")), payment_key=payment_key(2)) as node:
        same = [await raw_session(node.port, identity(2).node_id, n=60) for _ in range(3)]
        with trio.fail_after(10):
            # The third session of one node id replaces the oldest one.
            assert await same[0][0].receive_some(65536) == b""
        others = [await raw_session(node.port, identity(2).node_id, n=61 + i) for i in range(5)]
        with trio.fail_after(10):
            while node.pending_handshakes:  # the node finishes its side of the last handshake
                await trio.sleep(0)
        # Every other node at the same address keeps its session; none holds a handshake slot.
        assert node.session_count == 2 + 5
        assert {s.peer_node_id for s in node.sessions()} == {cached_identity(n).node_id for n in range(60, 66)}
        for stream, _ in same[1:] + others:
            await stream.aclose()


def raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")


#: Idle connections the flood holds from the honest peer's own address.
IDLE_FLOOD = 2000
#: How long the honest peer waits for its handshake and chunk.  The node takes the
#: flood's connections off its accept queue before the honest one, which a loaded
#: machine slows past the default handshake timeout; the behaviour under test is
#: that the newcomer evicts a pending handshake rather than waiting for one to
#: expire, and waiting for expiries (the handshake timeout for each batch of
#: ``max_handshakes``) would take the honest peer minutes.
HONEST_WAIT = 60.0
assert HONEST_WAIT < IDLE_FLOOD / Limits().max_handshakes * Limits().handshake_timeout


@pytest.mark.slow
async def test_honest_peer_fetches_while_its_address_holds_two_thousand_idle_connections(tmp_path: Path) -> None:
    raise_open_file_limit(IDLE_FLOOD + 256)
    seed = hashlib.sha256(b"idle flood target").digest()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.transport_node", str(tmp_path / "s"), seed.hex(), "8"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    flood: list[trio.SocketStream] = []
    try:
        assert proc.stdout is not None
        port_s, node_hex = (await trio.to_thread.run_sync(proc.stdout.readline)).split()
        port, node_id = int(port_s), bytes.fromhex(node_hex)
        # Raw sockets from 127.0.0.1 that never send a byte, all held open.
        with trio.fail_after(60):
            for _ in range(IDLE_FLOOD):
                flood.append(await dial(port))
        async with open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "c")), payment_key=payment_key(1),
                                  limits=Limits(handshake_timeout=HONEST_WAIT)) as me:
            with trio.fail_after(HONEST_WAIT):
                session = await me.connect(node_id, "127.0.0.1", port)
                assert await session.get_chunk(chunk(5, 20_000)[0]) == chunk(5, 20_000)[1]
        assert proc.poll() is None, "node process died"
    finally:
        for stream in flood:
            await trio.aclose_forcefully(stream)
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)


async def dial(port: int) -> trio.SocketStream:
    # A bare connect: open_tcp_stream's happy-eyeballs machinery is needless here.
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def garbage_connection(port: int, node_id: bytes, rng: random.Random, kind: int) -> None:
    """One hostile connection; ``kind`` 0-19 picks the abuse (19: after a handshake)."""
    try:
        if kind == 19:  # a full handshake, then a garbage record
            stream, conn = await raw_session(port, node_id, n=100 + rng.randrange(4))
            choice = rng.randrange(3)
            if choice == 0:
                await stream.send_all(rng.randbytes(rng.randrange(1, 3000)))
            elif choice == 1:
                record = bytearray(conn.send(GetChunk(request_id=1, address=bytes(32))))
                record[rng.randrange(len(record))] ^= 1 << rng.randrange(8)
                await stream.send_all(record)
            else:
                await stream.send_all((2**31).to_bytes(4, "big") + rng.randbytes(100))
        else:
            stream = await dial(port)
            if kind < 8:  # random bytes, sometimes behind a valid preamble
                junk = rng.randbytes(rng.randrange(1, 3000))
                await stream.send_all((b"mu\x00\x01" + junk) if kind == 1 else junk)
            elif kind < 12:  # half a preamble, then gone
                await stream.send_all(b"mu")
            # else: connect and vanish
        await stream.aclose()
    except (trio.BrokenResourceError, OSError, RemoteProtocolError):
        pass


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc for RSS")
async def test_node_survives_ten_thousand_garbage_connections(tmp_path: Path) -> None:
    seed = hashlib.sha256(b"flood target").digest()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.transport_node", str(tmp_path / "s"), seed.hex(), "8"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        port_s, node_hex = (await trio.to_thread.run_sync(proc.stdout.readline)).split()
        port, node_id = int(port_s), bytes.fromhex(node_hex)
        good_fetches = 0
        async with open_transport(identity(1), ChunkServer(ChunkStore(tmp_path / "c")), payment_key=payment_key(1)) as me:
            session = await me.connect(node_id, "127.0.0.1", port)
            assert await session.get_chunk(chunk(0, 20_000)[0]) == chunk(0, 20_000)[1]
            baseline = rss_kib(proc.pid, "VmRSS")
            rng = random.Random(5)
            limiter = trio.Semaphore(12)

            async def one(kind: int) -> None:
                async with limiter:
                    await garbage_connection(port, node_id, rng, kind)

            # The flood hands the good peer a turn every 100 connections.
            turns_send, turns_receive = trio.open_memory_channel[int](1)

            async def flood() -> None:
                async with turns_send, trio.open_nursery() as nursery:
                    for i in range(10_000):
                        await limiter.acquire()
                        limiter.release()
                        nursery.start_soon(one, i % 20)
                        if i % 100 == 99:
                            await turns_send.send(i)

            async def well_behaved() -> None:
                nonlocal good_fetches
                async for i in turns_receive:
                    address, data = chunk(i % 8, 20_000)
                    with trio.fail_after(20):
                        assert await session.get_chunk(address) == data
                    good_fetches += 1

            with trio.fail_after(500):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    nursery.start_soon(well_behaved)
            # Still serving, on the same session, after the flood.
            assert session.is_open
            assert await session.get_chunk(chunk(3, 20_000)[0]) == chunk(3, 20_000)[1]
        peak = rss_kib(proc.pid, "VmHWM")
        assert good_fetches == 100
        assert (peak - baseline) * 1024 <= GARBAGE_MEMORY_BOUND, (peak, baseline)
        assert proc.poll() is None, "node process died"
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)
