"""Async (trio) Bitcoin Core JSON-RPC client, for ``mu chain`` and bitcoind alike.

An httpx client on trio with one keep-alive HTTP/1.1 connection, re-opened
when the server closed it; calls are serialised on it.  Credentials come from a cookie file
(re-read after a 401, because a restarted server writes a new cookie) or
from a user name and password.  Callers own overall deadlines, but every
call also has the client's own ``timeout`` so a dead server cannot hang a
node.  Wire shapes: ``specs/chain.md`` §4 JSON-RPC over HTTP.

Errors:
    RPCError: the server answered with a JSON-RPC error (``.code`` is
        bitcoind's RPCErrorCode, ``.message`` its text).
    RPCAuthError: HTTP 401, the credentials are wrong.
    RPCTransportError: no usable answer (refused, reset, timeout, HTTP
        status without a JSON body, oversized reply).
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

# Bitcoin Core's RPCErrorCode values (src/rpc/protocol.h) that mu uses.
RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMS = -32602
RPC_INTERNAL_ERROR = -32603
RPC_PARSE_ERROR = -32700
RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_VERIFY_ERROR = -25
RPC_VERIFY_REJECTED = -26
RPC_VERIFY_ALREADY_IN_CHAIN = -27

#: Largest reply accepted (a verbose getblock of a full block fits).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0

# httpx logs every request at INFO: a node's log (and a CLI's stderr) would
# carry a line per RPC call.  Its warnings still show.
logging.getLogger("httpx").setLevel(logging.WARNING)
COOKIE_USER = "__cookie__"
SATS_PER_BTC = 100_000_000


class RPCError(Exception):
    """A JSON-RPC error answer from the server."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"RPC error {code}: {message}")
        self.code = code
        self.message = message


class RPCTransportError(Exception):
    """The server could not be reached or gave no usable answer."""


class RPCAuthError(RPCTransportError):
    """The server refused the credentials (HTTP 401)."""


def btc_to_sats(value: Any) -> int:
    """Convert an RPC amount (BTC, parsed as Decimal or int) to int satoshis exactly."""
    sats = Decimal(str(value)) * SATS_PER_BTC
    if sats != sats.to_integral_value():
        raise ValueError(f"amount {value} has more than 8 decimals")
    return int(sats)


def sats_to_btc(sats: int) -> float:
    """An amount in satoshis as the BTC number Bitcoin Core's JSON carries."""
    return round(sats / SATS_PER_BTC, 8)


@dataclass(frozen=True, slots=True)
class RPCCredentials:
    """HTTP Basic credentials, from a cookie file or given directly."""

    user: str
    password: str

    @classmethod
    def from_cookie(cls, path: Path) -> RPCCredentials:
        """Read bitcoind's ``__cookie__:<hex>`` cookie format."""
        text = path.read_text().strip()
        user, sep, password = text.partition(":")
        if not sep:
            raise RPCTransportError(f"{path} is not an RPC cookie file")
        return cls(user, password)

    def header(self) -> bytes:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}".encode()


class RPCClient:
    """A JSON-RPC client; use ``async with RPCClient(url, ...) as rpc``."""

    def __init__(
        self,
        url: str,
        *,
        cookie_path: Path | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"RPC URL must be http://host:port/, got {url!r}")
        self.url = url
        self._cookie_path = cookie_path
        self._fixed = RPCCredentials(user, password or "") if user is not None else None
        self._credentials: RPCCredentials | None = None
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._lock = trio.Lock()
        self._ids = itertools.count(1)

    async def __aenter__(self) -> RPCClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            with trio.CancelScope(shield=True):
                await http.aclose()

    def _auth(self, *, reload: bool = False) -> RPCCredentials | None:
        if self._fixed is not None:
            return self._fixed
        if self._cookie_path is None:
            return None
        if self._credentials is None or reload:
            try:
                self._credentials = RPCCredentials.from_cookie(self._cookie_path)
            except OSError as exc:
                raise RPCTransportError(f"cannot read RPC cookie {self._cookie_path}: {exc}") from exc
        return self._credentials

    async def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional ``params``; returns the ``result``.

        Raises:
            RPCError, RPCAuthError, RPCTransportError: see the module docstring.
        """
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "1.0", "id": request_id, "method": method, "params": list(params)})
        async with self._lock:
            try:
                with trio.fail_after(self.timeout):
                    status, reply = await self._exchange(body.encode())
                    if status == 401 and self._cookie_path is not None and self._fixed is None:
                        self._auth(reload=True)  # the server restarted with a new cookie
                        status, reply = await self._exchange(body.encode())
            except trio.TooSlowError:
                await self.aclose()
                raise RPCTransportError(f"{method}: no answer from {self.url} within {self.timeout} s") from None
        if status == 401:
            raise RPCAuthError(f"{self.url} refused the RPC credentials (HTTP 401)")
        try:
            message = json.loads(reply, parse_float=Decimal)
        except ValueError:
            raise RPCTransportError(f"{method}: HTTP {status} without a JSON body") from None
        if not isinstance(message, dict):
            raise RPCTransportError(f"{method}: reply is not a JSON object")
        if message.get("id") != request_id:
            # A reply to another call (one cancelled half-way on a kept-alive
            # connection): never hand it out as this call's result.
            await self.aclose()
            raise RPCTransportError(f"{method}: reply id {message.get('id')!r} is not the request's {request_id}")
        error = message.get("error")
        if error:
            raise RPCError(int(error.get("code", RPC_MISC_ERROR)), str(error.get("message", "")))
        if status != 200:
            raise RPCTransportError(f"{method}: HTTP {status}")
        return message.get("result")

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # One kept-alive connection (calls are serialised by the lock);
            # the caller's trio deadline bounds each call, not httpx's timeouts.
            self._http = httpx.AsyncClient(
                timeout=None, trust_env=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        return self._http

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        """Send one request; once more on a fresh connection if a kept-alive one went stale."""
        headers = {"Content-Type": "application/json"}
        credentials = self._auth()
        if credentials is not None:
            headers["Authorization"] = credentials.header().decode()
        for attempt in (0, 1):
            try:
                async with self._client().stream("POST", self.url, content=body, headers=headers) as response:
                    return response.status_code, await _read_reply(response)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # The server closed a kept-alive connection before replying
                # (it restarted): start afresh and retry once.
                await self.aclose()
                if attempt:
                    raise RPCTransportError(f"cannot talk to {self.url}: {exc}") from exc
            except (httpx.HTTPError, OSError) as exc:
                await self.aclose()
                raise RPCTransportError(f"cannot talk to {self.url}: {exc}") from exc
        raise RPCTransportError(f"cannot talk to {self.url}")


async def _read_reply(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise RPCTransportError("reply too large")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            raise RPCTransportError("reply too large")
    return bytes(data)
