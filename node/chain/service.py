"""``mu chain``: the service that ties kernel, mempool, miner and RPC together.

Files in the chain directory (``<data dir>/chain``, ``specs/chain.md`` §5 Files and recovery):
``chain.lock`` (held while the service runs, so one service per directory;
node/runtime/lock.py), ``kernel/`` (libbitcoinkernel's blocks and
chainstate), ``blocks.log`` (append-only accepted blocks), ``.cookie``
(bitcoind's ``__cookie__:<64 hex>`` format, mode 0600, removed on clean
exit) and ``rpc.port`` (the bound RPC port, decimal, written once
listening).  Only the lock holder writes or removes them.
"""

from __future__ import annotations

import inspect
import json
import logging
import secrets
from pathlib import Path
from typing import Any

import trio

from node.chain.http import BasicAuth, serve_http
from node.chain.methods import METHODS, ChainNode
from node.chain.state import ChainState
from node.runtime.config import write_secret_file
from node.runtime.lock import hold_lock
from node.bitcoin.rpc import (
    RPC_INTERNAL_ERROR,
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_PARSE_ERROR,
    COOKIE_USER,
    RPCError,
)

log = logging.getLogger(__name__)

CHAIN_DIR = "chain"
COOKIE_FILE = ".cookie"
PORT_FILE = "rpc.port"
LOCK_FILE = "chain.lock"
DEFAULT_RPC_PORT = 18443
#: Requests one JSON-RPC batch may hold.
MAX_BATCH = 100
#: Where the service's own blocks pay when no address is given: P2WSH(OP_TRUE).
ANYONE_CAN_SPEND = bytes.fromhex("00204ae81572f06e1b88fd5ced7a1a000945432e83e1551e6f721ee9c00b8cc33260")


# Each method's parameters after ``node``, for positional/named mapping.
_SIGNATURES = {name: list(inspect.signature(f).parameters.values())[1:] for name, f in METHODS.items()}


def chain_dir(data_dir: Path) -> Path:
    return data_dir / CHAIN_DIR


class Dispatcher:
    """Turns one HTTP body into one HTTP status and JSON reply body."""

    def __init__(self, node: ChainNode) -> None:
        self.node = node

    async def __call__(self, body: bytes) -> tuple[int, bytes]:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            return 500, self._encode(None, None, RPCError(RPC_PARSE_ERROR, "Parse error"), legacy=True)
        if isinstance(request, list):
            if not 0 < len(request) <= MAX_BATCH:
                return 400, self._encode(None, None, RPCError(RPC_INVALID_REQUEST, "Invalid batch size"), legacy=True)
            replies = [await self._one(item) for item in request]
            return 200, b"[" + b",".join(reply for _, reply in replies) + b"]"
        return await self._one(request)

    @staticmethod
    def _encode(request_id: Any, result: Any, error: RPCError | None, *, legacy: bool) -> bytes:
        err = None if error is None else {"code": error.code, "message": error.message}
        if legacy:
            message: dict[str, Any] = {"result": result, "error": err, "id": request_id}
        else:
            message = {"jsonrpc": "2.0", "id": request_id}
            message.update({"error": err} if err else {"result": result})
        return json.dumps(message, separators=(",", ":")).encode()

    async def _one(self, request: Any) -> tuple[int, bytes]:
        if not isinstance(request, dict):
            return 400, self._encode(None, None, RPCError(RPC_INVALID_REQUEST, "Invalid Request object"), legacy=True)
        request_id = request.get("id")
        legacy = request.get("jsonrpc") != "2.0"
        method_name = request.get("method")
        params = request.get("params", [])
        if params is None:
            params = []
        try:
            if not isinstance(method_name, str):
                raise RPCError(RPC_INVALID_REQUEST, "Method must be a string")
            method = METHODS.get(method_name)
            if method is None:
                raise RPCError(RPC_METHOD_NOT_FOUND, "Method not found")
            result = await method(self.node, *self._arguments(method, method_name, params))
        except RPCError as exc:
            status = 404 if exc.code == RPC_METHOD_NOT_FOUND else 500
            if exc.code == RPC_INVALID_REQUEST:
                status = 400
            return (status if legacy else 200), self._encode(request_id, None, exc, legacy=legacy)
        except Exception as exc:  # a bug must not take the service down
            log.exception("internal error in %s", method_name)
            error = RPCError(RPC_INTERNAL_ERROR, f"internal error: {exc.__class__.__name__}")
            return (500 if legacy else 200), self._encode(request_id, None, error, legacy=legacy)
        return 200, self._encode(request_id, result, None, legacy=legacy)

    @staticmethod
    def _arguments(method: Any, name: str, params: Any) -> list[Any]:
        parameters = _SIGNATURES[name]
        names = [p.name for p in parameters]
        required = [p for p in parameters if p.default is inspect.Parameter.empty]
        if isinstance(params, dict):
            unknown = set(params) - set(names)
            if unknown:
                raise RPCError(RPC_MISC_ERROR, f"Unknown named parameter {sorted(unknown)[0]}")
            args = [params.get(p.name, p.default) for p in parameters]
            while args and args[-1] is inspect.Parameter.empty:
                args.pop()
            if inspect.Parameter.empty in args:
                raise RPCError(RPC_MISC_ERROR, f"{name}: missing required parameter")
            return args
        if not isinstance(params, list):
            raise RPCError(RPC_INVALID_REQUEST, "Params must be an array or object")
        if not len(required) <= len(params) <= len(names):
            raise RPCError(RPC_MISC_ERROR, f"{name}: expected {len(required)} to {len(names)} parameters")
        return list(params)


def write_cookie(directory: Path) -> tuple[str, str]:
    """Write a fresh bitcoind-style cookie (mode 0600); returns the credentials."""
    password = secrets.token_hex(32)
    write_secret_file(directory / COOKIE_FILE, f"{COOKIE_USER}:{password}".encode())
    return COOKIE_USER, password


def _write_port(directory: Path, port: int) -> None:
    tmp = directory / (PORT_FILE + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(directory / PORT_FILE)


async def serve_chain(
    data_dir: Path,
    *,
    rpc_port: int = DEFAULT_RPC_PORT,
    block_interval: float | None,
    mine_script: bytes = ANYONE_CAN_SPEND,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``mu chain`` until cancelled or asked to ``stop``; reports the RPC port.

    Args:
        data_dir: the mu data dir; the chain lives in ``data_dir/chain``.
        rpc_port: the RPC port on 127.0.0.1; 0 lets the OS choose.
        block_interval: mine a block every this many seconds, and at once
            when a transaction enters an empty mempool (``specs/chain.md``
            §3.4 When blocks are mined); None mines only on
            ``generatetoaddress``.
        mine_script: the output script the service's own blocks pay.

    Raises:
        DataDirLocked: another process runs a chain on this directory; no
            other file was touched.
        ExceptionGroup: around the ``OSError`` of an RPC port that could not
            be bound (``errno.EADDRINUSE`` when taken).
    """
    directory = chain_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    # The lock before any other file (specs/chain.md §5 Files and recovery):
    # a second service stops here and leaves the first one's files alone.
    with hold_lock(directory / LOCK_FILE):
        # Left by a holder that was killed; ours to replace now.
        (directory / PORT_FILE).unlink(missing_ok=True)
        state = ChainState(directory)
        node = ChainNode(state)
        try:
            user, password = write_cookie(directory)
            auth = BasicAuth([(user, password)])
            async with trio.open_nursery() as nursery:

                async def rpc(task_status: trio.TaskStatus[int]) -> None:
                    # serve_http returns after ``stop`` once its reply is out; the rest stops with it.
                    await serve_http(Dispatcher(node), auth, rpc_port, stop=node.stop_requested,
                                     task_status=task_status)
                    nursery.cancel_scope.cancel()

                port = await nursery.start(rpc)
                _write_port(directory, port)
                log.info("mu chain at height %d, RPC on 127.0.0.1:%d", state.height, port)
                if block_interval is not None:
                    log.info("mining a block every %g s and at once for a transaction entering an empty mempool",
                             block_interval)
                    nursery.start_soon(_mine_on_its_own, node, block_interval, mine_script)
                task_status.started(port)
        finally:
            (directory / COOKIE_FILE).unlink(missing_ok=True)
            (directory / PORT_FILE).unlink(missing_ok=True)
            state.close()


async def _mine_on_its_own(node: ChainNode, interval: float, script: bytes) -> None:
    """A block every ``interval`` seconds, and one at once for a transaction entering an empty mempool."""
    while True:
        with trio.move_on_after(interval):
            await node.transaction_arrived()
        await node.generate(1, script)
