"""Must hold: every bad payment or channel is refused with its own code; nothing is served unpaid.

The host is a real `mu node` on a real `mu chain`; the fetcher crafts the
bad requests with the same library code a node uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.ledger import LEDGER_FILE, Ledger
from node.transport import RequestError
from protocol.bitcoin import SIGHASH_ALL
from protocol.bitcoin.channel import close_deadline, commitment_digest
from protocol.payments import PaymentErrorCode, chunk_price
from protocol.payments.messages import ChannelId, OpenChannel, Payment
from protocol.wire import ChannelMessage, MessageType
from tests.helpers.chain import open_mu_chain
from tests.helpers.exchange import open_fetcher, seed_chunks, wait_for
from tests.helpers.node import open_mu_node

CHUNK = 16 * 1024
PRICE = 4_096  # 64 sats per 16 KiB chunk


async def refused(call) -> RequestError:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError) as info:
        await call
    return info.value


async def test_each_bad_payment_gets_its_own_code_and_nothing_is_served_unpaid(tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    addresses = seed_chunks(host_dir, 4, CHUNK)
    price = chunk_price(CHUNK, PRICE)
    codes: dict[str, int] = {}
    async with open_mu_chain(tmp_path / "chain") as chain:
        args = ["--price-get", str(PRICE), "--free-allowance", "0", "--expiry-window", "10", "--settle-poll", "0.2"]
        async with open_mu_node(host_dir, chain, args) as host, open_fetcher(tmp_path / "payer", chain) as fetcher:
            link = await fetcher.link(host)
            session, key = link.session, fetcher.payer.key

            def sign(params, total: int) -> bytes:  # type: ignore[no-untyped-def]
                return key.sign(commitment_digest(params, total)) + bytes((SIGHASH_ALL,))

            async def open_raw(request: OpenChannel) -> RequestError:
                return await refused(session.request(
                    ChannelMessage(request_id=0, type=MessageType.OPEN_CHANNEL, fields=request.to_wire())))

            # No payment past a zero allowance: insufficient, with the amount owed.
            error = await refused(session.get_chunk(addresses[0]))
            assert error.owed == price
            codes["no payment"] = error.code
            # A payment on a channel the host never heard of.
            ghost = Payment(channel=ChannelId(os.urandom(32), 0), total=price, sig=b"\x30" * 70 + b"\x01")
            codes["unknown channel"] = (await refused(session.get_chunk(addresses[0], ghost.to_wire()))).code

            # Channel A, short expiry: announced before it confirms, with a wrong amount, then properly.
            tip = int(await chain.rpc.call("getblockcount"))
            short = await fetcher.payer.fund_channel(link, fetcher.wallet, capacity=20_000, expiry=tip + 20)
            params_a = link.channel.params  # type: ignore[union-attr]
            opening = OpenChannel(channel=short, capacity=20_000, expiry=tip + 20, payer_pubkey=key.public_key.data)
            codes["unconfirmed funding"] = (await open_raw(opening)).code
            await fetcher.mine(1)
            wrong = OpenChannel(channel=short, capacity=20_001, expiry=tip + 20, payer_pubkey=key.public_key.data)
            codes["wrong amount"] = (await open_raw(wrong)).code
            funding = await chain.rpc.call("getrawtransaction", short.txid[::-1].hex(), True)
            spent_input = funding["vin"][0]
            spent = OpenChannel(channel=ChannelId(bytes.fromhex(spent_input["txid"])[::-1], spent_input["vout"]),
                                capacity=20_000, expiry=tip + 20, payer_pubkey=key.public_key.data)
            codes["spent funding"] = (await open_raw(spent)).code
            await fetcher.payer.announce(link)
            # Past its close deadline, payments on A are refused.
            deadline = close_deadline(tip + 20)
            await fetcher.mine(deadline - int(await chain.rpc.call("getblockcount")))

            def a_closed() -> bool:
                with Ledger.open(host_dir / LEDGER_FILE) as ledger:
                    record = ledger.channel(str(short))
                    return record is not None and record.state != "open"

            await wait_for(a_closed)
            late = Payment(channel=short, total=price, sig=sign(params_a, price))
            codes["expired channel"] = (await refused(session.get_chunk(addresses[0], late.to_wire()))).code

            # Channel B: one honest paid chunk, then every kind of bad payment.
            await fetcher.open_channel(link, capacity=30_000)
            assert await fetcher.payer.get(link, addresses[0], expected_size=CHUNK)
            params_b, last_total, last_sig = link.channel.params, link.channel.total, link.machine.last_sig  # type: ignore[union-attr]
            assert last_total == price and last_sig is not None
            channel_b = link.channel_id
            assert channel_b is not None
            replay = Payment(channel=channel_b, total=last_total, sig=last_sig)
            codes["replay"] = (await refused(session.get_chunk(addresses[1], replay.to_wire()))).code
            lower = Payment(channel=channel_b, total=last_total - 1, sig=sign(params_b, last_total - 1))
            codes["lower total"] = (await refused(session.get_chunk(addresses[1], lower.to_wire()))).code
            forged = Payment(channel=channel_b, total=last_total + price, sig=sign(params_b, last_total + price + 1))
            codes["wrong signature"] = (await refused(session.get_chunk(addresses[1], forged.to_wire()))).code
            short_pay = Payment(channel=channel_b, total=last_total + 1, sig=sign(params_b, last_total + 1))
            error = await refused(session.get_chunk(addresses[1], short_pay.to_wire()))
            assert error.owed == price
            codes["underpayment"] = error.code

            assert codes == {
                "no payment": PaymentErrorCode.INSUFFICIENT_PAYMENT,
                "unknown channel": PaymentErrorCode.UNKNOWN_CHANNEL,
                "unconfirmed funding": PaymentErrorCode.FUNDING_UNCONFIRMED,
                "wrong amount": PaymentErrorCode.FUNDING_MISMATCH,
                "spent funding": PaymentErrorCode.FUNDING_SPENT,
                "expired channel": PaymentErrorCode.CHANNEL_EXPIRED,
                "replay": PaymentErrorCode.PAYMENT_REPLAY,
                "lower total": PaymentErrorCode.PAYMENT_TOTAL_LOWER,
                "wrong signature": PaymentErrorCode.BAD_SIGNATURE,
                "underpayment": PaymentErrorCode.INSUFFICIENT_PAYMENT,
            }
            # Distinct refusals get distinct codes (underpayment and no payment are the same refusal).
            assert len(set(codes.values())) == len(codes) - 1

            # The session survived every refusal and a correct payment still works.
            assert await fetcher.payer.get(link, addresses[1], expected_size=CHUNK)
            with Ledger.open(host_dir / LEDGER_FILE) as ledger:
                served = ledger.payments(peer=fetcher.transport.identity.node_id.hex())
                account = ledger.account(fetcher.transport.identity.node_id.hex(), "in")
                channel_row = ledger.channel(str(channel_b))
            assert [p.chunk for p in served] == [addresses[0].hex(), addresses[1].hex()]
            assert account.consumed - account.paid <= 0  # nothing served past the (zero) allowance
            assert channel_row is not None and channel_row.total == 2 * price
