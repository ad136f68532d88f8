"""Must hold: a payment channel opened, paid through and closed on a real mu chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.bitcoin.rpc import RPC_VERIFY_REJECTED, RPCError
from node.bitcoin.wallet import Wallet
from protocol.bitcoin import OutPoint, p2wpkh_for
from protocol.bitcoin.channel import (
    ChannelParams,
    PayeeChannel,
    PayerChannel,
    funding_script_for,
    refund_transaction,
    refund_vsize,
)
from protocol.bitcoin.policy import min_relay_fee
from tests.helpers.chain import MuChain, funded_wallet

CAPACITY = 2_000_000
FEE_RATE = 2


async def open_channel(chain: MuChain, payer: Wallet, payee: Wallet, expiry: int) -> ChannelParams:
    payer_key, payee_key = payer.keys[2], payee.keys[0]
    script = funding_script_for(payer_key.public_key, payee_key.public_key, expiry)
    txid, vout = await payer.fund_channel(script, CAPACITY)
    await chain.rpc.call("generatetoaddress", 1, payer.address())
    out = await chain.rpc.call("gettxout", txid, vout)
    assert out["confirmations"] == 1 and out["scriptPubKey"]["hex"] == script.hex()
    return ChannelParams(OutPoint.from_hex(txid, vout), CAPACITY, payer_key.public_key,
                         payee_key.public_key, expiry, FEE_RATE)


async def test_channel_payments_settle_on_chain(chain: MuChain, tmp_path: Path) -> None:
    rpc = chain.rpc
    payer = await funded_wallet(chain, tmp_path / "payer")
    payee = await Wallet.open(tmp_path / "payee", rpc)
    height = await rpc.call("getblockcount")
    params = await open_channel(chain, payer, payee, height + 100)
    paying, paid = PayerChannel(params, payer.keys[2]), PayeeChannel(params, payee.keys[0])
    for amount in (1_000, 25_000, 3_333, 120_000, 7):
        assert paid.accept(paying.pay(amount), amount) == paying.total
    total = paying.total
    assert total == 149_340

    payee_before, payer_before = await payee.balance(), await payer.balance()
    close = paid.close_transaction()
    assert await rpc.call("sendrawtransaction", close.hex()) == close.txid_hex()
    [block] = await rpc.call("generatetoaddress", 1, payee.address(1))  # pay the miner elsewhere
    assert close.txid_hex() in (await rpc.call("getblock", block))["tx"]

    assert await payee.balance() - payee_before == total
    change = CAPACITY - total - params.commitment_fee
    assert await payer.balance() - payer_before == change
    refund = refund_transaction(params, payer.keys[2], p2wpkh_for(payer.keys[2].public_key),
                                min_relay_fee(refund_vsize(params, payer.script_pubkey(2))))
    with pytest.raises(RPCError) as err:  # closed: before expiry it is non-final anyway
        await rpc.call("sendrawtransaction", refund.hex())
    assert (err.value.code, err.value.message) == (RPC_VERIFY_REJECTED, "non-final")


async def test_channel_refund_only_from_expiry_plus_one(chain: MuChain, tmp_path: Path) -> None:
    rpc = chain.rpc
    payer = await Wallet.open(tmp_path / "payer", rpc)
    payee = Wallet(b"\x02" * 32, rpc)
    await payer.faucet(1)
    expiry = await rpc.call("getblockcount") + 4
    params = await open_channel(chain, payer, payee, expiry)
    destination = payer.script_pubkey(3)
    fee = min_relay_fee(refund_vsize(params, destination)) * FEE_RATE
    refund = refund_transaction(params, payer.keys[2], destination, fee)
    while (tip := await rpc.call("getblockcount")) < expiry:
        with pytest.raises(RPCError) as err:
            await rpc.call("sendrawtransaction", refund.hex())
        assert (err.value.code, err.value.message) == (RPC_VERIFY_REJECTED, "non-final")
        assert await rpc.call("getblockcount") == tip
        await rpc.call("generatetoaddress", 1, payee.address())
    assert await rpc.call("sendrawtransaction", refund.hex()) == refund.txid_hex()
    [block] = await rpc.call("generatetoaddress", 1, payee.address())
    mined = await rpc.call("getblock", block)
    assert mined["height"] == expiry + 1 and refund.txid_hex() in mined["tx"]
    out = await rpc.call("gettxout", refund.txid_hex(), 0)
    assert out["scriptPubKey"]["hex"] == destination.hex()
