"""tune_allocator: chunks received through a session reuse memory instead of faulting in fresh pages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# GETs 1 MiB chunks over two Sessions on a socketpair, four at a time as a
# fetch does, and prints the minor page faults per chunk after a warm-up.  A
# fresh MiB costs 256; without the tuning glibc here faulted about 100 per chunk.
RECEIVE_CHUNKS = """
import hashlib, os, resource, sys
import trio
from node.transport import Limits, Session, tune_allocator
from protocol.wire import Chunk, GetChunk
from tests.helpers.wire_pair import established_pair

tuned = sys.argv[1] == "tuned" and tune_allocator()
data = os.urandom(1 << 20)
address = hashlib.sha256(data).digest()

class Server:
    async def handle_request(self, session, message):
        return Chunk(request_id=message.request_id, address=address, data=data)

async def main():
    client_conn, server_conn = established_pair()
    left, right = trio.socket.socketpair()
    async with trio.open_nursery() as nursery:
        client = Session(trio.SocketStream(left), client_conn, Server(), Limits(), lambda s: None)
        server = Session(trio.SocketStream(right), server_conn, Server(), Limits(), lambda s: None)
        await nursery.start(client.run)
        await nursery.start(server.run)

        async def fetch(count):
            async with trio.open_nursery() as workers:
                for _ in range(4):
                    async def worker():
                        for _ in range(count // 4):
                            assert await client.get_chunk(address) == data
                    workers.start_soon(worker)

        await fetch(32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        await fetch(128)
        print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 128)
        client.close()
        server.close()

trio.run(main)
"""


def faults_per_chunk(mode: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", RECEIVE_CHUNKS, mode], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return out[0] == "True", float(out[1])


def test_received_chunks_reuse_memory_once_the_allocator_is_tuned() -> None:
    tuned, faults = faults_per_chunk("tuned")
    if not tuned:
        pytest.skip("not glibc: tune_allocator has nothing to tune")
    assert faults < 16, f"{faults} page faults per 1 MiB chunk"
