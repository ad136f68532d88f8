"""Benchmark: chunks over one mu session vs raw loopback TCP vs AES-GCM alone.

Issue 22 asks for an encrypted session at >= 0.8x of single-core AES-GCM of
the library the session runs on.  A session between two processes moves
its bytes through loopback TCP as well, which costs two kernel copies per
byte (into the socket, out of it), so the machine's own loopback limit is
measured in the same run and printed beside the other two: the session
cannot beat it, and if raw loopback is itself below 0.8x of AES-GCM the
script says so.

Moves the same number of bytes (default 256 MiB, 1 MiB chunks) each way in
one run, interleaved, because this shared machine's speed drifts:

* AES-256-GCM alone in this process, one message per chunk:
  ``cryptography``'s AESGCM (OpenSSL, one key object, into caller
  buffers), the library the session uses and so the single-core reference;
  the session's own KeyedGcm sealing and opening chunk-shaped records
  (header and meta, then data, protocol/noise/_gcm.py); pycryptodome's GCM
  (one ``AES.new`` per message), printed so the reference's library choice
  stays visible; and KeyedGcm on 65,519-byte messages, the largest a
  standard Noise transport message can carry (specs/wire.md §4.2);
* raw loopback TCP: plain sockets between two processes (sendall of 1 MiB
  -> recv_into), with the kernel socket buffers a session asks for;
* GET_CHUNK requests over one mu session between two processes (a child
  process serves chunks from memory through node.transport);
* the session's own overhead, both ends in this process: two wire
  Connections with each record copied once into the peer's receive buffer
  (no sockets), and two Sessions over a socketpair; beside them AES-GCM
  sealing then opening each message on one core, the reference for a
  process that is both ends; and a memcpy of the same messages, from which
  (with raw loopback's CPU per MiB) it prints how close to that reference
  the passes over a record that no session code can skip would let a
  session come with no Python at all.

Prints MiB/s (median of --runs), the ratios, CPU and page faults per chunk
of each side, the load average, and peak RSS of both sides.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from node.transport import Session
    from protocol.wire import Connection, Message

MiB = 1024 * 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a child process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_page_faults(pid: int) -> int:
    """Minor page faults of a child process so far (Linux /proc): fresh memory touched."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def page_faults() -> int:
    """Minor page faults of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def make_chunks(count: int, size: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        data = os.urandom(size)
        out.append((hashlib.sha256(data).digest(), data))
    return out


# ------------------------------------------------------------------ AES-GCM
# A chunk record's plaintext: a 12-byte header and about 40 bytes of meta, then the data.
_HEAD = 52


def _meta_size(header: bytes) -> int:
    return _HEAD - 12


def bench_aes(total: int, message_size: int, library: str = "cryptography") -> tuple[float, float, float]:
    """Return (encrypt MiB/s, decrypt MiB/s, encrypt MiB per CPU-second).

    ``library``: "cryptography" (one AESGCM object, into caller buffers, as
    the session runs it), "keyed" (the session's own KeyedGcm,
    protocol/noise/_gcm.py) or "pycryptodome" (one ``AES.new`` per message).
    """
    from Crypto.Cipher import AES
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from protocol.noise._gcm import TAG_SIZE, KeyedGcm

    key = os.urandom(32)
    data = os.urandom(message_size)
    head, body = data[:_HEAD], data[_HEAD:]
    count = max(1, total // message_size)
    out = bytearray(message_size + TAG_SIZE)
    view = memoryview(out)
    aead, gcm = AESGCM(key), KeyedGcm(key)
    start = time.perf_counter()
    cpu = time.process_time()
    for n in range(count):
        iv = n.to_bytes(12, "big")
        if library == "cryptography":
            aead.encrypt_into(iv, data, b"", view)
        elif library == "keyed":
            gcm.seal_into(iv, b"", (head, body), view)  # as a record: header + meta, then data
        else:
            cipher = AES.new(key, AES.MODE_GCM, nonce=iv)
            cipher.encrypt(data, output=view[:message_size])
            view[message_size:] = cipher.digest()
    enc = count * message_size / (time.perf_counter() - start) / MiB
    enc_cpu = count * message_size / max(time.process_time() - cpu, 1e-9) / MiB
    sealed = bytes(out)
    sealed_view = memoryview(sealed)
    plain = bytearray(message_size)
    iv = (count - 1).to_bytes(12, "big")
    start = time.perf_counter()
    for n in range(count):
        if library == "cryptography":
            aead.decrypt_into(iv, sealed, b"", plain)
        elif library == "keyed":
            gcm.open_split(iv, b"", sealed_view, 12, _meta_size)
        else:
            cipher = AES.new(key, AES.MODE_GCM, nonce=iv)
            cipher.decrypt(sealed[:message_size], output=view[:message_size])
            cipher.verify(sealed[message_size:])
    dec = count * message_size / (time.perf_counter() - start) / MiB
    return enc, dec, enc_cpu


def bench_aes_both(total: int, message_size: int) -> tuple[float, float]:
    """(MiB/s, MiB per CPU-second) of sealing then opening each message (cryptography AESGCM, caller buffers).

    The reference for a session pair in one process: its one core seals
    each record at one end and opens it at the other.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    data = os.urandom(message_size)
    sealed = bytearray(message_size + 16)
    plain = bytearray(message_size)
    count = max(1, total // message_size)
    start, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        iv = n.to_bytes(12, "big")
        aead.encrypt_into(iv, data, b"", sealed)
        aead.decrypt_into(iv, sealed, b"", plain)
    return _rates(count * message_size, start, cpu)


def bench_copy(total: int, message_size: int) -> tuple[float, float]:
    """(MiB/s, MiB per CPU-second) of copying each message into a reused buffer (one memcpy).

    The cost of one pass over a record that is not the cipher's: the copy
    into a peer's receive buffer, a socket's copy in or out, or filling the
    new ``bytes`` object a received chunk becomes (``cryptography`` zeroes
    it before decrypting into it).
    """
    data = os.urandom(message_size)
    out = bytearray(message_size)
    count = max(1, total // message_size)
    start, cpu = time.perf_counter(), time.process_time()
    with memoryview(out) as view:
        for _ in range(count):
            view[:] = data
    return _rates(count * message_size, start, cpu)


def _rates(size: int, start: float, cpu: float) -> tuple[float, float]:
    """(MiB/s, MiB per CPU-second of this process) since ``start`` / ``cpu``."""
    return (size / (time.perf_counter() - start) / MiB, size / max(time.process_time() - cpu, 1e-9) / MiB)


# ------------------------------------------------------- in-memory session
def _connection_pair() -> tuple[Connection, Connection]:
    """Two established wire Connections (client, server), handshake and HELLOs moved in memory."""
    from protocol.identity import Identity
    from protocol.wire import NEED_DATA, Connection, Hello, Role

    def hello(identity: Identity) -> Hello:
        return Hello(version=1, node_id=identity.node_id, identity_key=identity.public_key, tcp_port=1, udp_port=1,
                     payment_key=b"\x02" + bytes(32))

    a, b = Identity(hashlib.sha256(b"bench a").digest()), Identity(hashlib.sha256(b"bench b").digest())
    client = Connection(Role.INITIATOR, identity=a, static_key=os.urandom(32), ephemeral_key=os.urandom(32),
                        hello=hello(a), expected_node_id=b.node_id)
    server = Connection(Role.RESPONDER, identity=b, static_key=os.urandom(32), ephemeral_key=os.urandom(32),
                        hello=hello(b))
    while client.peer_hello is None or server.peer_hello is None:
        for src, dst in ((client, server), (server, client)):
            out = src.data_to_send()
            if out:
                dst.receive_data(out)
            while dst.next_event() is not NEED_DATA:
                pass
    return client, server


def bench_records(total: int, chunk_size: int) -> tuple[float, float]:
    """(MiB/s, MiB per CPU-second) of GET_CHUNK / CHUNK through two wire Connections in one process, no sockets.

    What the session's own record layer costs per chunk (framing, msgpack,
    sealing into the reused batch buffer, opening out of the receive
    buffer): each record is copied once into the peer's receive buffer, as
    one socket read would.
    """
    from protocol.wire import Chunk, GetChunk

    client, server = _connection_pair()
    data = os.urandom(chunk_size)
    address = hashlib.sha256(data).digest()

    def move(src: Connection, dst: Connection, message: Message) -> object:
        out = src.send_batch([message])
        size = len(out)
        with dst.get_buffer(size) as view:
            view[:] = out
        out.release()
        dst.buffer_updated(size)
        return dst.next_event()

    count = max(1, total // chunk_size)
    start, cpu = time.perf_counter(), time.process_time()
    for n in range(count):
        request = move(client, server, GetChunk(request_id=1 + n % 1000, address=address))
        assert isinstance(request, GetChunk)
        reply = move(server, client, Chunk(request_id=request.request_id, address=address, data=data))
        assert isinstance(reply, Chunk) and len(reply.data) == chunk_size
    return _rates(count * chunk_size, start, cpu)


def bench_session_pair(total: int, chunk_size: int, inflight: int) -> tuple[float, float]:
    """(MiB/s, MiB per CPU-second) of GET_CHUNK between two trio Sessions over a socketpair in one process.

    The whole session (reader, writer, request routing, the handler task)
    without TCP or a second process; the kernel copies each record once into
    the pair and once out of it.
    """
    import trio

    from node.transport import Limits, Session
    from protocol.wire import Chunk, GetChunk

    data = os.urandom(chunk_size)
    address = hashlib.sha256(data).digest()
    count = max(1, total // chunk_size)

    class MemoryServer:
        async def handle_request(self, session: Session, message: Message) -> Message | None:
            assert isinstance(message, GetChunk)
            return Chunk(request_id=message.request_id, address=message.address, data=data)

    rate: list[tuple[float, float]] = []

    async def main() -> None:
        client_conn, server_conn = _connection_pair()
        left, right = trio.socket.socketpair()
        async with trio.open_nursery() as nursery:
            client = Session(trio.SocketStream(left), client_conn, _NoServer(), Limits(), lambda s: None)
            server = Session(trio.SocketStream(right), server_conn, MemoryServer(), Limits(), lambda s: None)
            await nursery.start(client.run)
            await nursery.start(server.run)
            remaining = count

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    reply = await client.request(GetChunk(request_id=0, address=address))
                    assert isinstance(reply, Chunk) and len(reply.data) == chunk_size

            start, cpu = time.perf_counter(), time.process_time()
            async with trio.open_nursery() as workers:
                for _ in range(inflight):
                    workers.start_soon(worker)
            rate.append(_rates(count * chunk_size, start, cpu))
            client.close()
            server.close()

    trio.run(main)
    return rate[0]


# ---------------------------------------------------------------- plain TCP
def _socket_buffers(sock: socket.socket) -> None:
    """Ask for the kernel buffers a session asks for (specs/wire.md §8, SOCKET_BUFFER_SIZE)."""
    from node.transport._session import SOCKET_BUFFER_SIZE

    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_SIZE)


def serve_tcp(total: int, chunk_size: int) -> None:
    listener = socket.socket()
    _socket_buffers(listener)  # before the port is out: the import stays outside the timing
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    _socket_buffers(conn)
    data = os.urandom(chunk_size)
    sent = 0
    while sent < total:
        conn.sendall(data)
        sent += chunk_size
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    conn.close()


def bench_tcp(total: int, chunk_size: int) -> tuple[float, float]:
    """Return (MiB/s, MiB per CPU-second of the busier process)."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--child-tcp", str(total), str(chunk_size)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    port = int(child.stdout.readline())
    sock = socket.create_connection(("127.0.0.1", port))
    _socket_buffers(sock)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    got = 0
    start = time.perf_counter()
    cpu, child_cpu = time.process_time(), child_cpu_seconds(child.pid)
    while got < total:
        n = sock.recv_into(view)
        if not n:
            break
        got += n
    elapsed = time.perf_counter() - start
    busiest = max(time.process_time() - cpu, child_cpu_seconds(child.pid) - child_cpu, 1e-9)
    sock.close()
    child.wait()
    assert got == total, (got, total)
    return total / elapsed / MiB, total / busiest / MiB


# ------------------------------------------------------------------ session
def serve_session(distinct: int, chunk_size: int) -> None:
    import trio

    from node.transport import open_transport
    from protocol.identity import Identity
    from protocol.wire import Chunk, GetChunk

    chunks = dict(make_chunks(distinct, chunk_size))

    class MemoryServer:
        async def handle_request(self, session: Session, message: Message) -> Message | None:
            assert isinstance(message, GetChunk)
            return Chunk(request_id=message.request_id, address=message.address, data=chunks[message.address])

    identity = Identity(hashlib.sha256(b"bench server").digest())

    async def main() -> None:
        async with open_transport(identity, MemoryServer(), payment_key=b"\x02" + bytes(32)) as transport:
            print(transport.port, identity.node_id.hex(), ",".join(a.hex() for a in chunks), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # serve until the parent closes stdin
        print(f"{peak_rss_mib():.0f}", flush=True)

    trio.run(main)


class SessionRun(NamedTuple):
    """One ``bench_session`` measurement."""

    mib_s: float
    mib_per_cpu_s: float  # of the busier process
    server_rss_mib: float
    client_us_per_chunk: float
    server_us_per_chunk: float
    client_faults_per_chunk: float
    server_faults_per_chunk: float


def bench_session(total: int, chunk_size: int, inflight: int, verify: bool) -> SessionRun:
    """GET ``total`` bytes in ``chunk_size`` chunks over one session to a child process."""
    import trio

    from node.transport import open_transport
    from protocol.identity import Identity
    from protocol.wire import Chunk, GetChunk

    distinct = 16
    child = subprocess.Popen(
        [sys.executable, __file__, "--child-session", str(distinct), str(chunk_size)],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    port_s, node_hex, addrs = child.stdout.readline().split()
    addresses = [bytes.fromhex(a) for a in addrs.split(",")]
    count = max(1, total // chunk_size)
    identity = Identity(hashlib.sha256(b"bench client").digest())
    figures: dict[str, float] = {}

    async def main() -> None:
        async with open_transport(identity, _NoServer(), payment_key=b"\x02" + bytes(32)) as transport:
            session = await transport.connect(bytes.fromhex(node_hex), "127.0.0.1", int(port_s))
            next_index = 0
            received = 0

            async def worker() -> None:
                nonlocal next_index, received
                while next_index < count:
                    address = addresses[next_index % distinct]
                    next_index += 1
                    if verify:
                        data = await session.get_chunk(address)
                    else:
                        reply = await session.request(GetChunk(request_id=0, address=address))
                        assert isinstance(reply, Chunk)
                        data = reply.data
                    received += len(data)

            start = time.perf_counter()
            cpu, child_cpu = time.process_time(), child_cpu_seconds(child.pid)
            faults, child_faults = page_faults(), child_page_faults(child.pid)
            async with trio.open_nursery() as nursery:
                for _ in range(inflight):
                    nursery.start_soon(worker)
            figures["mib_s"] = received / (time.perf_counter() - start) / MiB
            client_cpu, server_cpu = time.process_time() - cpu, child_cpu_seconds(child.pid) - child_cpu
            figures["client_faults_per_chunk"] = (page_faults() - faults) / count
            figures["server_faults_per_chunk"] = (child_page_faults(child.pid) - child_faults) / count
            figures["mib_per_cpu_s"] = received / max(client_cpu, server_cpu, 1e-9) / MiB
            figures["client_us_per_chunk"] = client_cpu / count * 1e6
            figures["server_us_per_chunk"] = server_cpu / count * 1e6
            assert received == count * chunk_size

    trio.run(main)
    child.stdin.close()
    server_rss = float(child.stdout.readline() or 0)
    child.wait()
    return SessionRun(server_rss_mib=server_rss, **figures)


class _NoServer:
    async def handle_request(self, session: Session, message: Message) -> Message | None:
        from node.transport import RequestRefused
        from protocol.wire import ErrorCode

        raise RequestRefused(ErrorCode.UNEXPECTED_MESSAGE)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-tcp":
        serve_tcp(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--child-session":
        serve_session(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 MiB, one run (for tests)")
    parser.add_argument("--mib", type=int, default=256, help="MiB moved per measurement (default 256)")
    parser.add_argument("--chunk-kib", type=int, default=1024, help="chunk size in KiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement; medians are printed")
    parser.add_argument("--inflight", type=int, default=4, help="concurrent GETs on the session (default 4)")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.runs = 16, 1
    total = args.mib * MiB
    chunk_size = args.chunk_kib * 1024

    # The C allocator as a node runs it (open_transport tunes it), for the
    # in-process measurements too: the session's ends and the chunks they hand out.
    from node.transport import tune_allocator

    tune_allocator()
    load = os.getloadavg()[0]
    print(f"mu transport benchmark: {args.mib} MiB in {args.chunk_kib} KiB chunks, median of {args.runs} run(s),"
          f" load average {load:.1f} on {os.cpu_count()} CPUs")
    bench_aes(min(total, 32 * MiB), chunk_size)  # warm up: CPU frequency, imports
    aes, keyed, pycryptodome, noise, tcp, sessions, verified = [], [], [], [], [], [], []
    both, records, pairs, copies = [], [], [], []
    for _ in range(args.runs):
        # Interleaved so that load from other processes hits all alike.
        aes.append(bench_aes(total, chunk_size))
        keyed.append(bench_aes(total, chunk_size, "keyed"))
        pycryptodome.append(bench_aes(total, chunk_size, "pycryptodome"))
        noise.append(bench_aes(total // 4, 65519, "keyed"))
        tcp.append(bench_tcp(total, chunk_size))
        sessions.append(bench_session(total, chunk_size, args.inflight, False))
        verified.append(bench_session(total, chunk_size, args.inflight, True))
        both.append(bench_aes_both(total, chunk_size))
        copies.append(bench_copy(total, chunk_size))
        records.append(bench_records(total, chunk_size))
        pairs.append(bench_session_pair(total, chunk_size, args.inflight))

    def med(rows: list, i: int) -> float:  # type: ignore[type-arg]
        return statistics.median(r[i] for r in rows)

    def med_of(runs: list[SessionRun], field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs)

    # The single-core AES-GCM reference is the library the session runs,
    # used the fastest way it offers (one key object, caller buffers).
    aes_rate, aes_dec, aes_cpu = med(aes, 0), med(aes, 1), med(aes, 2)
    session, session_cpu = med_of(sessions, "mib_s"), med_of(sessions, "mib_per_cpu_s")
    tcp_rate, tcp_cpu = med(tcp, 0), med(tcp, 1)
    rows = [
        ("AES-256-GCM, cryptography AESGCM (encrypt)", med(aes, 0)),
        ("AES-256-GCM, cryptography AESGCM (decrypt+verify)", med(aes, 1)),
        ("AES-256-GCM, pycryptodome AES.new per message (enc)", med(pycryptodome, 0)),
        ("AES-256-GCM, pycryptodome AES.new per message (dec)", med(pycryptodome, 1)),
        ("AES-256-GCM, mu KeyedGcm chunk records (encrypt)", med(keyed, 0)),
        ("AES-256-GCM, mu KeyedGcm chunk records (decrypt)", med(keyed, 1)),
        ("AES-256-GCM, KeyedGcm, 65,519-byte Noise-size msgs", med(noise, 0)),
        ("raw loopback TCP, plain sockets, 2 processes", tcp_rate),
        ("mu session GET_CHUNK, 2 processes", session),
        ("mu session GET_CHUNK + SHA-256 check", med_of(verified, "mib_s")),
    ]
    for name, rate in rows:
        print(f"  {name:<52} {rate:9.1f} MiB/s")
    print(f"  single-core AES-GCM reference = cryptography AESGCM encrypt: {aes_rate:.1f} MiB/s")
    print(f"  side by side: AES-GCM {aes_rate:.0f} | raw loopback {tcp_rate:.0f} | session {session:.0f} MiB/s")
    print(f"  cryptography / pycryptodome AES-GCM encrypt         = {aes_rate / med(pycryptodome, 0):.2f}x")
    print(f"  session / AES-GCM encrypt (single core)           = {session / aes_rate:.2f}x  (target >= 0.80x)")
    print(f"  session / AES-GCM decrypt+verify (single core)    = {session / aes_dec:.2f}x")
    print(f"  raw loopback / AES-GCM encrypt (single core)      = {tcp_rate / aes_rate:.2f}x  (a session's ceiling)")
    print(f"  session / raw loopback                            = {session / tcp_rate:.2f}x")
    if tcp_rate < 0.8 * aes_rate:
        print("  raw loopback TCP is itself below 0.80x of single-core AES-GCM here: no session over")
        print("  loopback can reach the 0.80x target on this machine; the session's bound is raw loopback.")
    # The session's own overhead: both ends in this process, so one core seals
    # and opens every record; its single-core reference is AES-GCM seal + open.
    # Ratios per CPU-second too: on a loaded machine wall time counts the
    # other processes' turns, CPU time only this one's work.
    print("  the session's own overhead, both ends in one process (no TCP, one core seals and opens):")
    print(f"    {'':<46} {'MiB/s':>9} {'ratio':>6} {'MiB/cpu-s':>10} {'ratio':>6}")
    both_wall, both_cpu = med(both, 0), med(both, 1)
    for name, rows_of in (("AES-256-GCM seal + open (the reference)", both),
                          ("wire Connection pair, records in memory", records),
                          ("Session pair over a socketpair (trio)", pairs)):
        wall, per_cpu = med(rows_of, 0), med(rows_of, 1)
        print(f"    {name:<46} {wall:9.1f} {wall / both_wall:5.2f}x {per_cpu:10.1f} {per_cpu / both_cpu:5.2f}x")
    print("    (target >= 0.80x; each record is copied once into the peer's receive buffer and opened into a"
          " fresh bytes object, as over a socket)")
    # What no session code can remove, besides the cipher: the chunk's new
    # bytes filled once (a memcpy's worth), and the record moved once: copied
    # into the receive buffer (the records pair), or through a socket, whose
    # send and receive ends each cost about what the busier end of raw
    # loopback costs per MiB (the Session pair is both ends).
    copy_cpu = med(copies, 1)
    records_bound = (1 / both_cpu) / (1 / both_cpu + 2 / copy_cpu)
    pair_bound = (1 / both_cpu) / (1 / both_cpu + 1 / copy_cpu + 2 / tcp_cpu)
    print(f"    memcpy of the same records {copy_cpu:.0f} MiB/cpu-s; bound with no Python at all: Connection pair"
          f" {records_bound:.2f}x (2 copies), Session pair {pair_bound:.2f}x (1 copy + loopback's 2 socket ends)")
    print(f"  Noise-size messages / 1 MiB messages (KeyedGcm)   = {med(noise, 0) / med(keyed, 0):.2f}x")
    print("  per CPU-second of the busier process (what each side could do on its own core):")
    print(f"    AES-GCM {aes_cpu:.0f}, raw loopback {tcp_cpu:.0f}, session {session_cpu:.0f} MiB/cpu-s"
          f" -> session / AES-GCM = {session_cpu / aes_cpu:.2f}x, session / raw loopback = {session_cpu / tcp_cpu:.2f}x")
    print(f"  session CPU per chunk: client {med_of(sessions, 'client_us_per_chunk'):.0f} us,"
          f" server {med_of(sessions, 'server_us_per_chunk'):.0f} us")
    print(f"  session page faults per chunk: client {med_of(sessions, 'client_faults_per_chunk'):.0f},"
          f" server {med_of(sessions, 'server_faults_per_chunk'):.0f}")
    print(f"  peak RSS: client {peak_rss_mib():.0f} MiB, server {max(s.server_rss_mib for s in sessions):.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
