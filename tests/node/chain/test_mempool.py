"""Mempool and wallet against a real mu chain: what bitcoind refuses, we refuse."""

from __future__ import annotations

import pytest

from node.bitcoin.rpc import RPC_VERIFY_ALREADY_IN_CHAIN, RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED, RPCError
from node.bitcoin.wallet import Coin, InsufficientFunds, Wallet
from protocol.bitcoin import OutPoint, Transaction, TxIn, TxOut
from tests.helpers.chain import MuChain


async def refused(chain: MuChain, tx: Transaction) -> tuple[int, str]:
    """Broadcast ``tx`` expecting a refusal; check the tip did not move."""
    tip = await chain.rpc.call("getbestblockhash")
    with pytest.raises(RPCError) as err:
        await chain.rpc.call("sendrawtransaction", tx.hex())
    assert await chain.rpc.call("getbestblockhash") == tip
    return err.value.code, err.value.message


async def test_wallet_send_and_mempool_refusals(chain: MuChain, tmp_path) -> None:
    rpc = chain.rpc
    payer = await Wallet.open(tmp_path / "payer", rpc)
    payee = Wallet(b"\x07" * 32, rpc)
    assert await payer.faucet(3) == 3 * 50 * 10**8
    coins = await payer.coins()
    assert len(coins) == 3

    # A good payment enters the mempool and the next block.
    txid = await payer.send(payee.address(), 1_000_000)
    assert await rpc.call("getrawmempool") == [txid]

    # Double spend of the same coin while the first is in the mempool.
    vin = (await rpc.call("getrawtransaction", txid, True))["vin"]
    spent_coin = next(c for c in coins if c.outpoint.txid_hex() == vin[0]["txid"])
    double = payer.build([spent_coin], [TxOut(2_000_000, payee.script_pubkey())])
    assert await refused(chain, double) == (RPC_VERIFY_REJECTED, "txn-mempool-conflict")

    # Same transaction again: bitcoind answers with its txid.
    raw = await rpc.call("getrawtransaction", txid)
    assert await rpc.call("sendrawtransaction", raw) == txid

    await rpc.call("generatetoaddress", 1, payee.address())
    assert await rpc.call("getrawmempool") == []
    assert await payee.balance() == 1_000_000  # its coinbase is immature
    code, message = await refused(chain, Transaction.from_hex(raw))
    assert (code, message) == (RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction already in block chain")
    assert await refused(chain, double) == (RPC_VERIFY_ERROR, "bad-txns-inputs-missingorspent")

    # A bad signature: sign for one amount, claim another.
    coin = (await payer.coins())[0]
    good = payer.build([coin], [TxOut(5_000_000, payee.script_pubkey())])
    liar = Coin(coin.outpoint, coin.value + 1, coin.key_index, coin.height, coin.coinbase)
    bad = good.with_witnesses([payer.build([liar], [TxOut(5_000_000, payee.script_pubkey())]).inputs[0].witness])
    code, message = await refused(chain, bad)
    assert code == RPC_VERIFY_REJECTED and message.startswith("mandatory-script-verify-flag-failed")
    assert (await rpc.call("testmempoolaccept", [bad.hex()]))[0]["allowed"] is False
    assert (await rpc.call("testmempoolaccept", [good.hex()]))[0]["allowed"] is True

    # Creating money, paying too little fee, immature coinbase.
    greedy = _signed(payer, coin, [TxOut(coin.value + 1, payee.script_pubkey())])
    code, message = await refused(chain, greedy)
    assert code == RPC_VERIFY_REJECTED and message.startswith("bad-txns-in-belowout")
    cheap = _signed(payer, coin, [TxOut(coin.value - 10, payee.script_pubkey())])
    code, message = await refused(chain, cheap)
    assert code == RPC_VERIFY_REJECTED and message.startswith("min relay fee not met")
    payee_coinbase = next(
        u for u in (await rpc.call("scantxoutset", "start", [f"addr({payee.address()})"]))["unspents"]
        if u["coinbase"])
    young = Coin(OutPoint.from_hex(payee_coinbase["txid"], payee_coinbase["vout"]), 50 * 10**8, 0,
                 payee_coinbase["height"], True)
    immature = payee.build([young], [TxOut(10**8, payer.script_pubkey())])
    code, message = await refused(chain, immature)
    assert code == RPC_VERIFY_REJECTED and message.startswith("bad-txns-premature-spend-of-coinbase")

    with pytest.raises(InsufficientFunds):
        await payee.send(payer.address(), 10**9)
    before = await payer.balance()
    sweep_txid = await payer.sweep(payee.address())
    await rpc.call("generatetoaddress", 1, payer.address())
    assert await payer.balance() == 0
    sweep = await rpc.call("getrawtransaction", sweep_txid, True)
    assert sweep["confirmations"] == 1 and len(sweep["vout"]) == 1
    fee = before - int(sweep["vout"][0]["value"] * 10**8)
    # Sized with 72-byte signatures before signing: at or just above the rate.
    assert sweep["vsize"] * payer.fee_rate <= fee <= (sweep["vsize"] + len(sweep["vin"])) * payer.fee_rate


def _signed(wallet: Wallet, coin: Coin, outputs: list[TxOut]) -> Transaction:
    """A correctly signed spend of ``coin`` with exactly ``outputs`` (no fee logic)."""
    tx = Transaction(2, (TxIn(coin.outpoint),), tuple(outputs), 0)
    return wallet._sign(tx, [coin])
