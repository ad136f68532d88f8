"""kill -9 of mu chain, then restart: height and UTXO set are as before."""

from __future__ import annotations

from pathlib import Path

from node.bitcoin.wallet import Wallet
from tests.helpers.chain import open_mu_chain


async def snapshot(rpc, descriptors: list[str]) -> tuple:
    scan = await rpc.call("scantxoutset", "start", descriptors)
    unspents = sorted((u["txid"], u["vout"], str(u["amount"]), u["height"]) for u in scan["unspents"])
    return (await rpc.call("getblockcount"), await rpc.call("getbestblockhash"), scan["txouts"], unspents)


async def test_kill_9_then_restart_keeps_height_and_utxos(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    payee = Wallet(b"\x05" * 32, rpc=None)  # type: ignore[arg-type]
    descriptors = [f"addr({payee.address()})"]
    async with open_mu_chain(data_dir) as chain:
        wallet = await Wallet.open(tmp_path / "w", chain.rpc)
        descriptors.append(f"addr({wallet.address()})")
        descriptors.append(f"addr({wallet.address(1)})")
        await wallet.faucet(2)
        await wallet.send(payee.address(), 700_000)
        await chain.rpc.call("generatetoaddress", 1, payee.address())
        await wallet.send(payee.address(), 300_000)  # left in the mempool
        before = await snapshot(chain.rpc, descriptors)
        chain.process.kill()  # SIGKILL: no clean shutdown, no flush
        await chain.process.wait()
    assert before[0] == 103
    async with open_mu_chain(data_dir) as chain:
        assert await snapshot(chain.rpc, descriptors) == before
        # The restarted chain keeps growing on the same tip.
        [new_hash] = await chain.rpc.call("generatetoaddress", 1, payee.address())
        assert (await chain.rpc.call("getblock", new_hash))["previousblockhash"] == before[1]
