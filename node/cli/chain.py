"""``mu chain``: run the embedded regtest chain service (``specs/chain.md``)."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys

import trio

from node.cli.arguments import port_number, positive_float
from node.cli.exit_codes import EXIT_OK, EXIT_FAILURE, fail
from node.runtime.config import resolve_data_dir
from node.runtime.lock import DataDirLocked

#: Seconds between the blocks `mu chain` mines on its own (specs/chain.md §3.4 When blocks are mined):
#: quick enough for a devnet, slow enough that regtest's subsidy (halving every 150 blocks) lasts for hours.
DEFAULT_BLOCK_INTERVAL = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chain",
        help="run the embedded regtest chain (Bitcoin Core JSON-RPC, validated by libbitcoinkernel)",
        description="Run the embedded regtest chain. By default it mines on its own: a block every "
                    "--block-interval seconds, and one at once when a transaction enters an empty "
                    "mempool, so fundings confirm within a moment. One chain per data dir.",
    )
    parser.add_argument("--rpc-port", type=port_number, default=18443,
                        help="RPC port on 127.0.0.1 (default 18443; 0 picks a free port)")
    parser.add_argument("--block-interval", type=positive_float, default=DEFAULT_BLOCK_INTERVAL, metavar="S",
                        help=f"mine a block every S seconds (default {DEFAULT_BLOCK_INTERVAL:g})")
    parser.add_argument("--no-mine", action="store_true",
                        help="mine only on generatetoaddress: no timed blocks, none for new transactions")
    parser.add_argument("--mine-address", default=None,
                        help="regtest address the chain's own blocks pay (default: P2WSH of OP_TRUE)")
    parser.set_defaults(func=run)


async def _main(args: argparse.Namespace) -> None:
    from node.chain.service import ANYONE_CAN_SPEND, chain_dir, serve_chain
    from protocol.bitcoin.bech32 import decode_address

    script = ANYONE_CAN_SPEND
    if args.mine_address:
        script = decode_address(args.mine_address, "regtest")
    data_dir = resolve_data_dir(args.data_dir)
    block_interval = None if args.no_mine else args.block_interval
    async with trio.open_nursery() as nursery:

        async def service(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_chain(data_dir, rpc_port=args.rpc_port, block_interval=block_interval,
                              mine_script=script, task_status=task_status)
            nursery.cancel_scope.cancel()  # the `stop` RPC ended the service

        port = await nursery.start(service)
        print(f"mu chain: RPC on http://127.0.0.1:{port}/ cookie {chain_dir(data_dir) / '.cookie'}", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def _sole_error(exc: BaseException) -> BaseException:
    """The one error inside nested one-member groups (each nursery wraps what its tasks raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        import pbk  # noqa: F401  (optional extra: mu[chain])
    except ImportError:
        return fail("mu chain needs py-bitcoinkernel: pip install 'mu[chain]'", EXIT_FAILURE)
    try:
        trio.run(_main, args)
    except (OSError, DataDirLocked, BaseExceptionGroup) as raised:
        error = _sole_error(raised)
        if isinstance(error, DataDirLocked):
            return fail(f"mu chain: {error}", EXIT_FAILURE)
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            return fail(f"mu chain: RPC port {args.rpc_port} on 127.0.0.1 is in use", EXIT_FAILURE)
        if isinstance(error, OSError):
            return fail(f"mu chain: {error}", EXIT_FAILURE)
        raise
    return EXIT_OK
