"""``mu wallet address|balance|send ADDRESS SATS|faucet BLOCKS`` (``specs/chain.md`` §7).

Spends use the ``fee_rate`` setting (``--fee-rate``, else the data dir's
config.toml, else the default), as the node's channel closes do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

from node.cli.arguments import int_in, positive_int
from node.cli.exit_codes import EXIT_OK, EXIT_FAILURE, fail
from node.runtime.config import resolve_data_dir
from node.runtime.settings import DEFAULTS, effective_settings
from node.bitcoin.rpc import RPCClient, RPCError, RPCTransportError

# Most blocks one `mu wallet faucet` mines to the wallet (each also needs 100 to mature).
MAX_FAUCET_BLOCKS = 1_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("wallet", help="the node wallet: address, balance, send, faucet")
    parser.add_argument("--rpc-url", default=None,
                        help="Bitcoin Core JSON-RPC URL (default: the local `mu chain` of this data dir)")
    parser.add_argument("--rpc-cookie", default=None,
                        help="cookie file for --rpc-url (default: none, then --rpc-user and --rpc-password)")
    parser.add_argument("--rpc-user", default=None, help="RPC user for --rpc-url (default: the cookie)")
    parser.add_argument("--rpc-password", default=None, help="RPC password for --rpc-user (default: none)")
    parser.add_argument("--fee-rate", type=positive_int, default=None,
                        help=f"fee rate in sat/vB (default: config.toml's fee_rate, else {DEFAULTS.fee_rate})")
    sub = parser.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)
    sub.add_parser("address", help="print the receive address")
    sub.add_parser("balance", help="print the spendable balance in satoshis")
    send = sub.add_parser("send", help="send SATS satoshis to ADDRESS")
    send.add_argument("address", help="regtest or bitcoin address to pay")
    send.add_argument("sats", type=positive_int, help="satoshis to send (at least 1)")
    sweep = sub.add_parser("sweep", help="send everything to ADDRESS")
    sweep.add_argument("address", help="address that receives the whole balance, less the fee")
    faucet = sub.add_parser("faucet", help="regtest: mine BLOCKS to the wallet plus 100 to mature them")
    faucet.add_argument("blocks", type=int_in(1, MAX_FAUCET_BLOCKS),
                        help=f"blocks whose coinbase pays the wallet (1 to {MAX_FAUCET_BLOCKS})")
    parser.set_defaults(func=run)


def _client(args: argparse.Namespace, data_dir: Path) -> RPCClient:
    if args.rpc_url:
        cookie = Path(args.rpc_cookie) if args.rpc_cookie else None
        return RPCClient(args.rpc_url, cookie_path=cookie, user=args.rpc_user, password=args.rpc_password)
    chain = data_dir / "chain"
    port_file = chain / "rpc.port"
    if not port_file.exists():
        raise RPCTransportError(f"no running `mu chain` in {data_dir} (start it, or pass --rpc-url)")
    return RPCClient(f"http://127.0.0.1:{int(port_file.read_text())}/", cookie_path=chain / ".cookie")


async def _main(args: argparse.Namespace) -> str:
    from node.bitcoin.wallet import Wallet

    data_dir = resolve_data_dir(args.data_dir)
    fee_rate = effective_settings(data_dir, {"fee_rate": args.fee_rate}).settings.fee_rate
    async with _client(args, data_dir) as rpc:
        wallet = await Wallet.open(data_dir, rpc, fee_rate=fee_rate)
        action = args.wallet_command
        if action == "address":
            return wallet.address()
        if action == "balance":
            return str(await wallet.balance())
        if action == "send":
            return await wallet.send(args.address, args.sats)
        if action == "sweep":
            return await wallet.sweep(args.address)
        return str(await wallet.faucet(args.blocks))


def run(args: argparse.Namespace) -> int:
    from node.bitcoin.wallet import WalletError

    try:
        print(trio.run(_main, args))
    except (WalletError, RPCError, RPCTransportError, ValueError) as exc:
        return fail(str(exc), EXIT_FAILURE)
    return EXIT_OK
