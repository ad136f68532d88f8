"""The node wallet: P2WPKH keys from a seed file, coins found with scantxoutset.

Keys: ``key(i) = HMAC-SHA256(seed, "mu:wallet-key:v1" || u32be(i))`` for
``i`` in ``0 .. KEY_COUNT-1``; key 0 receives, key 1 takes change
(``specs/chain.md`` §7 The node wallet).  The 32-byte seed lives in ``<data dir>/wallet.seed``
with mode 0600.  The wallet holds no coin database: it asks the chain
backend (``mu chain`` or bitcoind, through :class:`node.bitcoin.rpc.RPCClient`) with
``scantxoutset`` and skips coins that the mempool already spends
(``gettxout`` with mempool), so it works the same against either backend.
Unconfirmed change cannot be spent until it is mined.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from pathlib import Path

from node.runtime.config import ConfigError, load_secret
from node.bitcoin.rpc import RPCClient, btc_to_sats
from protocol.bitcoin import (
    OutPoint,
    PrivateKey,
    SighashCache,
    Transaction,
    TxIn,
    TxOut,
    decode_address,
    dust_threshold,
    encode_address,
    p2wpkh_for,
    p2wpkh_witness,
)
from protocol.bitcoin.script import output_type

SEED_FILE = "wallet.seed"
SEED_SIZE = 32
#: Keys the wallet derives and scans (receive, change, spares).
KEY_COUNT = 8
RECEIVE_KEY = 0
CHANGE_KEY = 1
#: Default fee rate in satoshis per vbyte.
DEFAULT_FEE_RATE = 2
#: Coins the wallet spends in one transaction at most.
MAX_INPUTS = 200
COINBASE_MATURITY = 100
#: Where the faucet's maturing blocks pay: P2WSH(OP_TRUE), nobody's wallet.
ANYONE_CAN_SPEND = bytes.fromhex("00204ae81572f06e1b88fd5ced7a1a000945432e83e1551e6f721ee9c00b8cc33260")
_CHAIN_NETWORKS = {"main": "main", "test": "test", "testnet4": "test", "signet": "signet", "regtest": "regtest"}
# A DER signature is at most 72 bytes with its sighash byte; used to size
# transactions before signing so the fee never falls short.
_DUMMY_WITNESS = (bytes(72), bytes(33))


class WalletError(Exception):
    """The wallet cannot do what was asked."""


class InsufficientFunds(WalletError):
    """Spendable coins do not cover the amount plus the fee."""


@dataclass(frozen=True, slots=True)
class Coin:
    """A spendable output of one of the wallet's keys."""

    outpoint: OutPoint
    value: int
    key_index: int
    height: int
    coinbase: bool


def derive_key(seed: bytes, index: int) -> PrivateKey:
    """The wallet's key number ``index`` (``specs/chain.md`` §7 The node wallet)."""
    digest = hmac.new(seed, b"mu:wallet-key:v1" + struct.pack(">I", index), hashlib.sha256).digest()
    return PrivateKey(digest)


def load_seed(data_dir: Path, *, create: bool = True) -> bytes:
    try:
        return load_secret(data_dir / SEED_FILE, SEED_SIZE, "wallet seed", create=create)
    except ConfigError as exc:
        raise WalletError(str(exc)) from None


class Wallet:
    """Receive, send, fund channels and sweep through a Bitcoin Core RPC backend."""

    def __init__(self, seed: bytes, rpc: RPCClient, *, network: str = "regtest",
                 fee_rate: int = DEFAULT_FEE_RATE) -> None:
        if fee_rate < 1:
            raise WalletError("fee rate must be at least 1 sat/vB")
        self.rpc = rpc
        self.network = network
        self.fee_rate = fee_rate
        self.keys = [derive_key(seed, i) for i in range(KEY_COUNT)]
        self.scripts = [p2wpkh_for(k.public_key) for k in self.keys]
        self._key_of_script = {s: i for i, s in enumerate(self.scripts)}

    @classmethod
    async def open(cls, data_dir: Path, rpc: RPCClient, *, fee_rate: int = DEFAULT_FEE_RATE) -> Wallet:
        """Load (or create) the seed in ``data_dir``; the network comes from the backend."""
        info = await rpc.call("getblockchaininfo")
        network = _CHAIN_NETWORKS.get(info.get("chain"), "regtest")
        return cls(load_seed(data_dir), rpc, network=network, fee_rate=fee_rate)

    # -- addresses and coins -----------------------------------------------------

    def address(self, index: int = RECEIVE_KEY) -> str:
        return encode_address(self.scripts[index], self.network)

    def script_pubkey(self, index: int = RECEIVE_KEY) -> bytes:
        return self.scripts[index]

    async def coins(self) -> list[Coin]:
        """Mature, confirmed coins of the wallet's keys not spent in the mempool."""
        descriptors = [f"addr({encode_address(s, self.network)})" for s in self.scripts]
        scan = await self.rpc.call("scantxoutset", "start", descriptors)
        tip = int(scan["height"])
        coins = []
        for item in scan["unspents"]:
            script = bytes.fromhex(item["scriptPubKey"])
            coinbase = bool(item.get("coinbase", False))
            height = int(item["height"])
            if coinbase and tip + 1 - height < COINBASE_MATURITY:
                continue
            if await self.rpc.call("gettxout", item["txid"], item["vout"], True) is None:
                continue  # already spent by a mempool transaction
            coins.append(Coin(OutPoint.from_hex(item["txid"], int(item["vout"])),
                              btc_to_sats(item["amount"]), self._key_of_script[script], height, coinbase))
        coins.sort(key=lambda c: (-c.value, c.outpoint.txid, c.outpoint.index))
        return coins

    async def balance(self) -> int:
        """Spendable satoshis (mature, confirmed, not spent in the mempool)."""
        return sum(c.value for c in await self.coins())

    # -- spending --------------------------------------------------------------

    def _fee(self, tx: Transaction, fee_rate: int) -> int:
        sized = tx.with_witnesses([_DUMMY_WITNESS] * len(tx.inputs))
        return sized.vsize() * fee_rate

    def build(self, coins: list[Coin], outputs: list[TxOut], *, fee_rate: int | None = None,
              change: bool = True) -> Transaction:
        """Select coins (largest first), add change above dust, sign every input.

        With ``change=False`` the single output takes everything left after
        the fee (a sweep).

        Raises:
            InsufficientFunds: the coins cannot pay outputs plus fee.
        """
        rate = fee_rate or self.fee_rate
        for out in outputs if change else ():
            if out.value < dust_threshold(out.script_pubkey) and output_type(out.script_pubkey) != "nulldata":
                raise WalletError(f"output of {out.value} sat is dust")
        target = sum(o.value for o in outputs)
        chosen: list[Coin] = []
        change_script = self.scripts[CHANGE_KEY]
        for coin in coins[:MAX_INPUTS]:
            chosen.append(coin)
            inputs = tuple(TxIn(c.outpoint, sequence=0xFFFFFFFD) for c in chosen)
            total = sum(c.value for c in chosen)
            if not change:
                continue
            with_change = Transaction(2, inputs, (*outputs, TxOut(0, change_script)), 0)
            fee = self._fee(with_change, rate)
            left = total - target - fee
            if left >= dust_threshold(change_script):
                return self._sign(Transaction(2, inputs, (*outputs, TxOut(left, change_script)), 0), chosen)
            bare = Transaction(2, inputs, tuple(outputs), 0)
            if total - target - self._fee(bare, rate) >= 0:
                return self._sign(bare, chosen)  # the remainder (below dust) goes to the fee
        if not change and chosen and len(outputs) == 1:
            inputs = tuple(TxIn(c.outpoint, sequence=0xFFFFFFFD) for c in chosen)
            total = sum(c.value for c in chosen)
            sweep = Transaction(2, inputs, (TxOut(0, outputs[0].script_pubkey),), 0)
            value = total - self._fee(sweep, rate)
            if value >= dust_threshold(outputs[0].script_pubkey):
                return self._sign(Transaction(2, inputs, (TxOut(value, outputs[0].script_pubkey),), 0), chosen)
        have = sum(c.value for c in coins[:MAX_INPUTS])
        raise InsufficientFunds(f"insufficient funds: {have} sat spendable, {target} sat plus fee needed")

    def _sign(self, tx: Transaction, coins: list[Coin]) -> Transaction:
        cache = SighashCache.of(tx)
        witnesses = [
            p2wpkh_witness(tx, i, self.keys[c.key_index], c.value, cache) for i, c in enumerate(coins)
        ]
        return tx.with_witnesses(witnesses)

    async def pay_to_script(self, script_pubkey: bytes, amount: int, *,
                            fee_rate: int | None = None) -> tuple[Transaction, int]:
        """Build, sign and broadcast a payment; returns the transaction and the output index."""
        if amount <= 0:
            raise WalletError("amount must be positive")
        tx = self.build(await self.coins(), [TxOut(amount, script_pubkey)], fee_rate=fee_rate)
        await self.rpc.call("sendrawtransaction", tx.hex())
        return tx, 0

    async def send(self, address: str, amount: int, *, fee_rate: int | None = None) -> str:
        """Pay ``amount`` satoshis to ``address``; returns the txid (display hex)."""
        try:
            script = decode_address(address, self.network)
        except ValueError as exc:
            raise WalletError(f"bad address {address!r}: {exc}") from None
        tx, _ = await self.pay_to_script(script, amount, fee_rate=fee_rate)
        return tx.txid_hex()

    async def fund_channel(self, script_pubkey: bytes, amount: int, *,
                           fee_rate: int | None = None) -> tuple[str, int]:
        """Create a channel funding output (e.g. P2WSH of the channel script).

        Returns:
            ``(txid, vout)`` of the funding output, txid in display hex.
        """
        txid, [vout] = await self.fund_channels([(script_pubkey, amount)], fee_rate=fee_rate)
        return txid, vout

    async def fund_channels(self, outputs: list[tuple[bytes, int]], *,
                            fee_rate: int | None = None) -> tuple[str, list[int]]:
        """Create several channel funding outputs in one transaction, in the order given (change last).

        Returns:
            ``(txid, vouts)``: the transaction's id in display hex and each output's index.
        """
        if not outputs or any(amount <= 0 for _, amount in outputs):
            raise WalletError("every funding amount must be positive")
        tx = self.build(await self.coins(), [TxOut(amount, script) for script, amount in outputs], fee_rate=fee_rate)
        await self.rpc.call("sendrawtransaction", tx.hex())
        return tx.txid_hex(), list(range(len(outputs)))

    async def sweep(self, address: str, *, fee_rate: int | None = None) -> str:
        """Send every spendable coin to ``address`` less the fee; returns the txid."""
        script = decode_address(address, self.network)
        coins = await self.coins()
        if not coins:
            raise InsufficientFunds("nothing to sweep")
        tx = self.build(coins, [TxOut(0, script)], fee_rate=fee_rate, change=False)
        await self.rpc.call("sendrawtransaction", tx.hex())
        return tx.txid_hex()

    async def faucet(self, blocks: int) -> int:
        """Regtest only: mine ``blocks`` to this wallet, then 100 more to mature them.

        Returns:
            The wallet's spendable balance afterwards.
        """
        if self.network != "regtest":
            raise WalletError("the faucet works on regtest only")
        if not 1 <= blocks <= 1_000:
            raise WalletError("faucet blocks must be 1..1000")
        await self.rpc.call("generatetoaddress", blocks, self.address())
        burn = encode_address(ANYONE_CAN_SPEND, self.network)
        await self.rpc.call("generatetoaddress", COINBASE_MATURITY, burn)
        return await self.balance()
