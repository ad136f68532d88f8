"""A payer process for crash tests: fetch chunks from a host, paying, printing each one received.

    python -m tests.helpers.payer_child DATA_DIR CHAIN_URL COOKIE HOST_ID HOST_PORT ADDRESS_FILE START [WORKERS]

Opens (or, on first run, funds and announces) a channel to the host with the
same library code a node uses, then fetches the addresses listed in
ADDRESS_FILE (hex, one per line) from index START, printing ``got <index>``
after each verified chunk.  With WORKERS, that many callers share one
``Payer`` (the paid window, specs/payments.md §Paid window), each chunk
received is kept in the child's store and chunks already there are not
asked for again (START is then ignored).  A test kills it with SIGKILL at
random moments and starts it again.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import trio

from node.runtime.config import load_identity
from node.runtime.daemon import PAYER_KEY_INDEX, PAYMENT_KEY_INDEX
from node.exchange import Payer
from node.ledger import LEDGER_FILE, Ledger
from node.bitcoin.rpc import RPCClient
from node.store import STORE_DIR, ChunkStore
from node.transport import ChunkServer, open_transport
from node.bitcoin.wallet import Wallet

CHUNK_SIZE = 16 * 1024


async def main(data_dir: Path, url: str, cookie: Path, host_id: bytes, host_port: int, addresses: list[bytes],
               start: int, workers: int) -> None:
    identity = load_identity(data_dir)
    with Ledger.open(data_dir / LEDGER_FILE) as ledger, ChunkStore(data_dir / STORE_DIR) as store:
        async with RPCClient(url, cookie_path=cookie) as rpc:
            wallet = await Wallet.open(data_dir, rpc)
            payer = Payer(ledger=ledger, key=wallet.keys[PAYER_KEY_INDEX], max_price_per_mib_get=10_000,
                          max_price_per_mib_put=10_000)
            async with open_transport(identity, ChunkServer(store),
                                      payment_key=wallet.keys[PAYMENT_KEY_INDEX].public_key.data) as transport:
                session = await transport.connect(host_id, "127.0.0.1", host_port)
                link = await payer.link(session)
                if link.channel is None:
                    await wallet.faucet(1)
                    tip = int(await rpc.call("getblockcount"))
                    await payer.fund_channel(link, wallet, capacity=50_000, expiry=tip + 144)
                    await rpc.call("generatetoaddress", 1, wallet.address(5))
                    await payer.announce(link)
                    print("channel", link.channel_id, flush=True)
                if workers:
                    todo = iter([i for i, a in enumerate(addresses) if not store.has(a)])

                    async def worker() -> None:
                        for index in todo:
                            data = await payer.get(link, addresses[index], expected_size=CHUNK_SIZE)
                            store.put(addresses[index], data)
                            print("got", index, link.channel.total if link.channel else 0, flush=True)

                    async with trio.open_nursery() as nursery:
                        for _ in range(workers):
                            nursery.start_soon(worker)
                else:
                    for index in range(start, len(addresses)):
                        data = await payer.get(link, addresses[index], expected_size=CHUNK_SIZE)
                        assert hashlib.sha256(data).digest() == addresses[index]
                        print("got", index, link.channel.total if link.channel else 0, flush=True)
                print("done", flush=True)


if __name__ == "__main__":
    data_dir, url, cookie, host_id, host_port, address_file, start = sys.argv[1:8]
    workers = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    listed = [bytes.fromhex(line) for line in Path(address_file).read_text().split()]
    trio.run(main, Path(data_dir), url, Path(cookie), bytes.fromhex(host_id), int(host_port), listed, int(start),
             workers)
