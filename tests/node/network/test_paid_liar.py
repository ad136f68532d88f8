"""A paid fetch from two hosts, one of which lies: detected, paid for a lie at most the bound, file correct.

Real parts throughout: `mu chain` as a subprocess (tests/helpers/chain.py),
hosts made of the daemon's own pieces (ledger, store, wallet, signed terms,
PayeeBook, PaidChunkServer, transport) in this process, and a fetcher paying
through node/exchange/paying.py.  The lying host runs the real PaidChunkServer (so it
records every payment it accepts) and corrupts its replies on the way out
after a few honest ones.  Its free allowance is one chunk's price, so a
fetcher pays for each chunk with its next request (specs/network.md §4).
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.runtime.config import load_identity
from node.runtime.daemon import PAYER_KEY_INDEX, PAYMENT_KEY_INDEX
from node.exchange import ChainView, PaidChunkServer, PayeeBook, Payer
from node.files.fetcher import PaidSource, fetch_file
from node.files.local import add_file
from node.ledger import LEDGER_FILE, Ledger
from node.exchange.paying import PaidPeers
from node.bitcoin.rpc import RPCClient
from node.store import ChunkStore
from node.transport import ChunkServer, Session, open_transport
from node.bitcoin.wallet import Wallet
from protocol.payments import Terms, chunk_price
from protocol.wire import Chunk, Message
from tests.helpers.chain import open_mu_chain

MIB = 1 << 20
CHUNK = MIB  # the default chunk size, which the payer prices a GET at before it knows
PRICE = 1_000  # sats per MiB


class Liar:
    """The real paid server; replies after the first ``honest`` chunks are corrupted."""

    def __init__(self, inner: PaidChunkServer, honest: int) -> None:
        self.inner = inner
        self.honest = honest
        self.served = 0

    async def handle_request(self, session: Session, message: Message) -> Message | None:
        reply = await self.inner.handle_request(session, message)
        if isinstance(reply, Chunk):
            self.served += 1
            if self.served > self.honest:
                reply = Chunk(request_id=reply.request_id, address=reply.address,
                              data=bytes([reply.data[0] ^ 1]) + reply.data[1:])
        return reply


@asynccontextmanager
async def host(data_dir: Path, rpc: RPCClient, origin: ChunkStore, lie_after: int | None, price: int):
    data_dir.mkdir(parents=True)
    identity = load_identity(data_dir)
    store = ChunkStore(data_dir / "chunks")
    store.put_many((a, origin.get(a)) for a in origin.list())
    with Ledger.open(data_dir / LEDGER_FILE) as ledger:
        wallet = await Wallet.open(data_dir, rpc)
        key = wallet.keys[PAYMENT_KEY_INDEX]
        terms = Terms(price_per_mib_get=price, price_per_mib_put=price, retention_seconds=86_400,
                      free_allowance=chunk_price(CHUNK + 16, price), min_capacity=10_000, expiry_window=36,
                      min_confirmations=1, fee_rate=2, payment_pubkey=key.public_key.data,
                      identity_key=identity.public_key).signed(identity)
        book = PayeeBook(ledger=ledger, terms=terms, payee_key=key, chain=ChainView(rpc))
        server = PaidChunkServer(store, book)
        handler = server if lie_after is None else Liar(server, lie_after)
        async with open_transport(identity, handler, payment_key=key.public_key.data,
                                  terms=terms.to_wire()) as transport:
            yield identity.node_id, transport.port, ledger, handler
    store.close()


@pytest.mark.slow
async def test_liar_is_never_paid_for_wrong_bytes(tmp_path: Path) -> None:
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(8 * MIB))
    origin = ChunkStore(tmp_path / "origin")
    link = add_file(origin, src, chunk_size=CHUNK).link
    async with open_mu_chain(tmp_path / "chain", block_interval=0.5) as chain, AsyncExitStack() as stack:
        rpc = chain.rpc
        liar_id, liar_port, liar_ledger, liar = await stack.enter_async_context(
            host(tmp_path / "liar", rpc, origin, lie_after=2, price=PRICE // 2))  # cheaper: asked first
        good_id, good_port, good_ledger, _ = await stack.enter_async_context(
            host(tmp_path / "good", rpc, origin, None, price=PRICE))
        me = tmp_path / "me"
        me.mkdir()
        identity = load_identity(me)
        ledger = stack.enter_context(Ledger.open(me / LEDGER_FILE))
        wallet = await Wallet.open(me, rpc)
        await wallet.faucet(1)
        payer = Payer(ledger=ledger, key=wallet.keys[PAYER_KEY_INDEX], max_price_per_mib_get=PRICE,
                      max_price_per_mib_put=PRICE)
        peers = PaidPeers(payer, wallet, rpc, capacity=200_000)
        transport = await stack.enter_async_context(open_transport(
            identity, ChunkServer(ChunkStore(me / "chunks")), payment_key=wallet.keys[PAYMENT_KEY_INDEX].public_key.data))
        sources = [await PaidSource.open(peers, await transport.connect(nid, "127.0.0.1", port))
                   for nid, port in ((liar_id, liar_port), (good_id, good_port))]
        out = tmp_path / "out.bin"
        with trio.fail_after(240):
            result = await fetch_file(link, out, sources, max_price_per_mib=PRICE, window=2)
        assert out.read_bytes() == src.read_bytes()
        assert result.banned == (liar_id,)
        p = result.progress.chunks
        # The liar's own ledger: paid for its honest chunks and, at most, the one request's price a payer
        # may have paid for and not yet received (specs/payments.md §Paid window, "Bound": with requests in
        # flight, the one carrying the payment for a lie can leave before the lie is seen), never more.
        earned_by_liar = liar_ledger.earnings()["earned"]
        assert liar.served > liar.honest  # it did lie
        assert earned_by_liar <= chunk_price(CHUNK + 16, PRICE // 2) * (liar.honest + 1)
        # Both sides agree to the sat, for each host.
        mine = ledger.earnings()["per_peer"]
        assert mine.get(liar_id.hex(), {}).get("spent", 0) == earned_by_liar
        assert mine[good_id.hex()]["spent"] == good_ledger.earnings()["earned"] > 0
        # every sat the fetcher sent is accounted for, spent or (sent along with a lie) lost
        assert p.sats_spent + p.sats_lost == earned_by_liar + good_ledger.earnings()["earned"]
