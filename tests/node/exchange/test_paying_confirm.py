"""A channel's funding is seen confirmed soon after its block, not a whole poll later (specs/network.md §4 Paying).

Every paid request to the host waits for that confirmation, and a devnet
mines the funding within milliseconds: polling every 0.25 s from the start
held a fetch a quarter second per channel opened.  The chain here stands
for ``mu chain``'s ``gettxout``; time is trio's autojump clock, so the
waits are exact.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
import trio.testing

from node.exchange import FundedChannel, paying
from node.exchange.paying import PaidPeers
from protocol.bitcoin import PrivateKey
from protocol.payments.messages import ChannelId

MINED_AFTER = 0.03  # seconds from the funding to its block


class Chain:
    """Answers ``gettxout`` as a chain that mines the funding ``MINED_AFTER`` seconds from now."""

    def __init__(self) -> None:
        self.mined_at = trio.current_time() + MINED_AFTER
        self.calls = 0

    async def call(self, method: str, *args: object) -> object:
        assert method == "gettxout"
        self.calls += 1
        return {"confirmations": int(trio.current_time() >= self.mined_at)}


async def test_a_funding_mined_at_once_is_seen_within_twice_its_time(autojump_clock: trio.testing.MockClock) -> None:
    chain = Chain()
    peers = PaidPeers(payer=None, wallet=None, rpc=chain)  # type: ignore[arg-type]
    link = SimpleNamespace(host=b"\x07" * 20, terms=SimpleNamespace(min_confirmations=1))
    start = trio.current_time()
    await peers._confirmed(link, ChannelId(txid=bytes(32), vout=0))  # type: ignore[arg-type]
    waited = trio.current_time() - start
    assert MINED_AFTER <= waited <= 2 * MINED_AFTER + paying.FIRST_CONFIRM_POLL
    assert chain.calls <= 4


async def test_a_slow_chain_is_asked_at_most_every_confirm_poll(autojump_clock: trio.testing.MockClock) -> None:
    chain = Chain()
    chain.mined_at += 60.0  # a real chain: about a block interval
    peers = PaidPeers(payer=None, wallet=None, rpc=chain)  # type: ignore[arg-type]
    link = SimpleNamespace(host=b"\x07" * 20, terms=SimpleNamespace(min_confirmations=1))
    await peers._confirmed(link, ChannelId(txid=bytes(32), vout=0))  # type: ignore[arg-type]
    assert chain.calls <= 60.0 / paying.CONFIRM_POLL + 10  # the backoff's first few, then one per poll



async def test_an_error_inside_a_watched_wait_comes_out_as_itself(autojump_clock: trio.testing.MockClock) -> None:
    """A funding's InsufficientFunds, a confirmation's TooSlowError: callers catch them by type."""
    with pytest.raises(trio.TooSlowError):
        async with paying.logged_if_slow("waiting for %s", "nothing", after=1.0):
            await trio.sleep(2.0)  # past the log line's deadline: its task ended, the nursery is still open
            raise trio.TooSlowError


async def test_a_channel_funded_ahead_but_slow_to_confirm_is_still_the_one_taken(
        autojump_clock: trio.testing.MockClock) -> None:
    """On a chain of ten-minute blocks the wait ahead runs out (``CONFIRM_TIMEOUT``) before the block:
    the channel sent is still the one the link takes, not a second funding (specs/payments.md, "Funding ahead")."""
    channel = ChannelId(txid=b"\x05" * 32, vout=0)
    fundings: list[object] = []

    class Payer:
        balance = None

        async def fund_many(self, orders: list[object], wallet: object) -> list[FundedChannel]:
            fundings.append(orders)
            return [FundedChannel(channel_id=channel, params=None)]  # type: ignore[arg-type]

    class SlowChain:
        async def call(self, method: str, *args: object) -> object:
            return 200 if method == "getblockcount" else {"confirmations": 0}  # no block yet

    async with trio.open_nursery() as nursery:
        peers = PaidPeers(Payer(), wallet=None, rpc=SlowChain(), nursery=nursery)  # type: ignore[arg-type]
        link = SimpleNamespace(host=b"\x07" * 20, terms=SimpleNamespace(
            min_confirmations=1, payment_pubkey=PrivateKey(bytes(31) + b"\x01").public_key.data, expiry_window=36,
            min_capacity=0))
        ahead = paying._Ahead()
        peers._ahead[link.host] = ahead
        await peers._fund_ahead(link, ahead)  # type: ignore[arg-type]
        funded = await peers._funded_ahead(link)  # type: ignore[arg-type]
    assert funded is not None and funded.channel_id == channel
    assert len(fundings) == 1
