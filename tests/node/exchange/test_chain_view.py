"""ChainView against a real `mu chain` subprocess: tip, gettxout, confirmations."""

from __future__ import annotations

from pathlib import Path

from node.exchange._chain import ChainView
from protocol.bitcoin import PrivateKey, encode_address, p2wpkh_for
from tests.helpers.chain import open_mu_chain


async def test_chain_view_reads_outputs_and_heights(tmp_path: Path) -> None:
    key = PrivateKey.from_seed(b"\x07" * 32)
    script = p2wpkh_for(key.public_key)
    address = encode_address(script, "regtest")
    async with open_mu_chain(tmp_path) as chain:
        view = ChainView(chain.rpc)
        start = await view.tip_height()
        hashes = await chain.rpc.call("generatetoaddress", 3, address)
        assert await view.tip_height() == start + 3
        block = await chain.rpc.call("getblock", hashes[0], 1)
        coinbase = block["tx"][0]
        output = await view.unspent_output(coinbase, 0)
        assert output is not None
        assert output.script_pubkey == script and output.value > 0 and output.confirmations == 3
        assert await view.unspent_output(coinbase, 5) is None
        assert await view.unspent_output("00" * 32, 0) is None
        assert await view.confirmation_height(coinbase) == (True, start + 1)
        assert await view.confirmation_height("11" * 32) == (False, None)
