"""The control API client (httpx on trio) that the CLI and the scripts use (specs/network.md §6 Control API)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from node.api.errors import ControlError, Json, NodeNotRunning
from node.api.server import API_PREFIX, PORT_FILE, TOKEN_FILE

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
#: Seconds for a whole plain call, and for a stream's reply to begin; a
#: stream's events then come as fast as the operation makes them.
CLIENT_TIMEOUT = 30.0

# httpx logs every request at INFO; the CLI's stderr is for the user.
logging.getLogger("httpx").setLevel(logging.WARNING)


class ControlClient:
    """Talks to the node whose data dir holds the token and port files."""

    def __init__(self, port: int, token: str, host: str = "127.0.0.1") -> None:
        self.port = port
        self.token = token
        self.host = host

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> ControlClient:
        """Read the port and token files; NodeNotRunning if either is missing or unreadable."""
        try:
            # The port, then the address when the node is bound to one that is not loopback.
            port_line, *host_line = (Path(data_dir) / PORT_FILE).read_text().split()
            token = (Path(data_dir) / TOKEN_FILE).read_text().strip()
            port = int(port_line)
        except (OSError, ValueError):
            raise NodeNotRunning(f"no node is running with data dir {data_dir} (start one with `mu node`)") from None
        return cls(port, token, *host_line[:1])

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://{self._address()}", headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(CLIENT_TIMEOUT, read=None), trust_env=False)

    def _address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @asynccontextmanager
    async def _send(self, method: str, path: str, body: Json | None) -> AsyncIterator[httpx.Response]:
        """One request; the response with its body still unread.  NodeNotRunning if nothing listens."""
        async with self._client() as client:
            try:
                async with client.stream(method, API_PREFIX + path, json=body) as response:
                    yield response
            except httpx.ConnectError:
                raise NodeNotRunning(f"no node answers on {self._address()}") from None
            except httpx.HTTPError as exc:
                raise ControlError(502, "bad-reply", f"the node's reply broke off: {exc}") from None

    async def call(self, method: str, path: str, body: Json | None = None) -> Json:
        """Send one request and return the JSON reply; ControlError for an error reply."""
        with trio.fail_after(CLIENT_TIMEOUT):
            async with self._send(method, path, body) as response:
                return _decode_reply(response.status_code, await _read_bounded(response))

    @asynccontextmanager
    async def open_stream(self, path: str, body: Json) -> AsyncIterator[AsyncIterator[Json]]:
        """``POST /v1/<path>`` and yield an iterator over its events (the last is done or error).

        Leaving the block closes the connection, which cancels the operation in the node.
        """
        async with self._send("POST", path, body) as response:
            if response.status_code != 200:
                with trio.fail_after(CLIENT_TIMEOUT):
                    _decode_reply(response.status_code, await _read_bounded(response))
            yield _events(response)

    async def run_stream(self, path: str, body: Json, on_event: Callable[[Json], None]) -> Json:
        """Run a streaming operation: ``on_event`` sees each progress event; returns the result.

        Raises:
            ControlError: the operation ended with an error event, or the stream broke off.
        """
        async with self.open_stream(path, body) as events:
            async for event in events:
                kind = event.get("event")
                if kind == "done":
                    result = event.get("result")
                    return result if isinstance(result, dict) else {}
                if kind == "error":
                    err = event.get("error") or {}
                    raise ControlError(500, str(err.get("code", "error")), str(err.get("message", "")))
                on_event(event)
        raise ControlError(502, "bad-reply", "the stream ended without a result")


async def _read_bounded(response: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            raise ControlError(502, "bad-reply", f"reply exceeds {MAX_RESPONSE_BYTES} bytes")
    return bytes(data)


async def _events(response: httpx.Response) -> AsyncIterator[Json]:
    """The NDJSON events of a streamed reply, each line at most ``MAX_EVENT_BYTES``."""
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        buf += chunk
        while (end := buf.find(b"\n")) >= 0:
            line = bytes(buf[:end])
            del buf[:end + 1]
            yield _event(line)
        if len(buf) > MAX_EVENT_BYTES:
            raise ControlError(502, "bad-reply", f"event exceeds {MAX_EVENT_BYTES} bytes")
    if buf:
        raise ControlError(502, "bad-reply", "stream ended inside an event")


def _event(line: bytes) -> Json:
    try:
        event = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(502, "bad-reply", "an event is not JSON") from None
    if not isinstance(event, dict):
        raise ControlError(502, "bad-reply", "an event is not a JSON object")
    return event


def _decode_reply(status: int, data: bytes) -> Json:
    try:
        reply = json.loads(data) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(502, "bad-reply", f"reply with status {status} is not JSON") from None
    if status != 200:
        err = reply.get("error", {}) if isinstance(reply, dict) else {}
        raise ControlError(status, str(err.get("code", "error")), str(err.get("message", f"HTTP {status}")))
    if not isinstance(reply, dict):
        raise ControlError(502, "bad-reply", "reply is not a JSON object")
    return reply
