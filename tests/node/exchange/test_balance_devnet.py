"""Must hold (issue 21): in balance mode the imbalance is paid exactly, to the sat, and the close settles it on chain.

A real `mu chain` and a real `mu node --offer`; the other node runs in the
test process with the library code a node uses (its own ledger, wallet,
transport and request handler, offering storage too).  It stores chunks
on the host and takes nothing back in return, so it owes the host their
price: past the payment threshold it pays exactly what it owes through its
channel (kind settle), and `mu channels close` puts exactly the sum on
chain (py-bitcoinkernel checks every transaction of the devnet).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from node.bitcoin.rpc import RPCClient
from node.bitcoin.wallet import Wallet
from node.exchange import BalanceBook, ChainView, HostLink, PaidChunkServer, PayeeBook, Payer
from node.ledger import LEDGER_FILE, Ledger
from node.runtime.config import load_identity
from node.runtime.daemon import PAYER_KEY_INDEX, PAYMENT_KEY_INDEX
from node.store import STORE_DIR, ChunkStore
from node.transport import open_transport
from protocol.payments import Kind, Terms, chunk_price
from protocol.payments.balance import BalanceTerms
from tests.helpers.balance import random_chunk
from tests.helpers.chain import REPO_ROOT, MuChain, open_mu_chain
from tests.helpers.exchange import address_balance, wait_for
from tests.helpers.node import MuNode, open_mu_node

CHUNK = 64 * 1024
PRICE_PUT = 30_000  # sats per MiB: 1,875 per 64 KiB chunk, so the default thresholds are crossed in a few
OFFER = "10GB"


@dataclass
class Taker:
    ledger: Ledger
    wallet: Wallet
    payer: Payer
    balance: BalanceBook
    rpc: RPCClient

    async def open_channel(self, link: HostLink, *, capacity: int) -> None:
        tip = int(await self.rpc.call("getblockcount"))
        await self.payer.fund_channel(link, self.wallet, capacity=capacity, expiry=tip + 144)
        await self.rpc.call("generatetoaddress", 1, self.wallet.address(5))
        await self.payer.announce(link)


@asynccontextmanager
async def open_taker(data_dir: Path, chain: MuChain, host: MuNode) -> AsyncIterator[tuple[Taker, HostLink]]:
    data_dir.mkdir(parents=True, exist_ok=True)
    identity = load_identity(data_dir)
    with Ledger.open(data_dir / LEDGER_FILE) as ledger, ChunkStore(data_dir / STORE_DIR) as store:
        async with RPCClient(chain.url, cookie_path=chain.cookie_path) as rpc:
            wallet = await Wallet.open(data_dir, rpc)
            await wallet.faucet(1)
            payee_key = wallet.keys[PAYMENT_KEY_INDEX]
            terms = Terms(price_per_mib_get=100, price_per_mib_put=300, retention_seconds=86_400, free_allowance=0,
                          min_capacity=10_000, expiry_window=36, min_confirmations=1, fee_rate=2,
                          payment_pubkey=payee_key.public_key.data, identity_key=identity.public_key,
                          offer=10 * 10**9).signed(identity)
            balance = BalanceBook(ledger=ledger, identity=identity, offer=terms.offer, terms=BalanceTerms())
            payer = Payer(ledger=ledger, key=wallet.keys[PAYER_KEY_INDEX], max_price_per_mib_get=1_000,
                          max_price_per_mib_put=PRICE_PUT, balance=balance)
            book = PayeeBook(ledger=ledger, terms=terms, payee_key=payee_key, chain=ChainView(rpc))
            server = PaidChunkServer(store, book, balance=balance)  # takes in the host's acknowledgements
            async with open_transport(identity, server, payment_key=payee_key.public_key.data,
                                      terms=terms.to_wire()) as transport:
                session = await transport.connect(host.node_id, "127.0.0.1", host.port)
                link = await payer.link(session)
                yield Taker(ledger=ledger, wallet=wallet, payer=payer, balance=balance, rpc=rpc), link


async def test_the_imbalance_is_paid_exactly_and_settled_on_chain(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    async with open_mu_chain(tmp_path / "chain") as chain:
        args = ["--offer", OFFER, "--price-put", str(PRICE_PUT), "--settle-poll", "0.2"]
        async with open_mu_node(host_dir, chain, args) as host, \
                open_taker(tmp_path / "taker", chain, host) as (taker, link):
            await taker.open_channel(link, capacity=200_000)
            price = chunk_price(CHUNK, PRICE_PUT)
            count = 3 * BalanceTerms().payment_threshold // price  # several payments' worth
            for _ in range(count):
                address, data = random_chunk(CHUNK)
                assert await taker.payer.put(link, address, data)

            def acknowledged() -> bool:
                view = taker.balance.view(host.node_id)
                return view is not None and view.unacknowledged == 0 and view.paid_out == view.acked_paid_out

            await wait_for(acknowledged)
            view = taker.balance.view(host.node_id)
            assert view is not None and view.taken == count * price and view.given == 0
            paid = view.paid_out
            assert paid > 0 and 0 <= -view.net < BalanceTerms().payment_threshold  # what is left is below it
            assert paid == count * price + view.net  # every sat paid is a sat of service taken, no more
            channel = link.channel_id
            assert channel is not None and link.channel is not None and link.channel.total == paid
            spent = taker.ledger.payments(channel_id=str(channel))
            assert {p.kind for p in spent} == {Kind.SETTLE} and sum(p.amount for p in spent) == paid
            with Ledger.open(host_dir / LEDGER_FILE) as ledger:
                record = ledger.channel(str(channel))
                assert record is not None and record.total == paid
                assert sum(p.amount for p in ledger.payments(channel_id=str(channel))) == paid
                balances = ledger.earnings()["balances"]["per_peer"][load_identity(tmp_path / "taker").node_id.hex()]
                assert balances == {"given": count * price, "taken": 0, "paid_in": paid, "paid_out": 0,
                                    "net": count * price - paid}

            before = await address_balance(chain.rpc, host.address)
            result = await trio.run_process(
                [sys.executable, "-m", "node", "--data-dir", str(host_dir), "channels", "close", str(channel)],
                cwd=str(REPO_ROOT), capture_stdout=True)
            assert b"marked closing" in result.stdout

            def confirmed() -> bool:
                with Ledger.open(host_dir / LEDGER_FILE) as ledger:
                    return any(s.state == "confirmed" for s in ledger.settlements(str(channel)))

            await wait_for(lambda: broadcast(host_dir, str(channel)))
            await chain.rpc.call("generatetoaddress", 1, taker.wallet.address(5))
            await wait_for(confirmed)
            assert await address_balance(chain.rpc, host.address) - before == paid  # exactly, to the sat


def broadcast(host_dir: Path, channel: str) -> bool:
    with Ledger.open(host_dir / LEDGER_FILE) as ledger:
        return bool(ledger.settlements(channel))
