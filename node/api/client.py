"""The control API client that the CLI and the scripts use (specs/network.md §6 Control API).

Two ways to call, one reply format.  The blocking calls (``call_blocking``,
``run_stream_blocking``: the standard library's ``http.client``) serve the
``mu`` command, which makes a request or two and exits: it starts without
trio or httpx, whose imports were most of a command's start-up (issue 22;
httpx's own blocking client, with the SSL context it builds, would bring
back much of it).
The async calls (``call``, ``open_stream``, ``run_stream``: httpx on trio)
serve code that already runs in trio (tests, scripts, devnets); they import
httpx and trio when first used.  Both read replies through the same bounded
decoders below.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from node.api.errors import ControlError, Json, NodeNotRunning

if TYPE_CHECKING:
    import socket

    import httpx

#: The data dir's files a running node writes for its clients: the bearer
#: token, and the port (then the address, when bound to one that is not loopback).
TOKEN_FILE = "control.token"
PORT_FILE = "control.port"
API_PREFIX = "/v1/"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
#: Seconds for a whole plain call, and for a stream's reply to begin; a
#: stream's events then come as fast as the operation makes them.
CLIENT_TIMEOUT = 30.0
#: Bytes asked of the socket per read of a blocking reply.
READ_SIZE = 64 * 1024


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

    def _address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # Blocking calls: for the `mu` command, outside any event loop.

    @contextmanager
    def _send_blocking(self, method: str, path: str, body: Json | None,
                       deadline: float) -> Iterator[tuple[http.client.HTTPResponse, _Socket]]:
        """One request; the response with its body unread, and its socket (whose timeout the caller sets).

        NodeNotRunning if nothing listens; ControlError if the reply does not begin by ``deadline``.
        """
        connection = http.client.HTTPConnection(self.host, self.port, timeout=_left(deadline))
        try:
            try:
                connection.connect()
            except OSError:
                raise NodeNotRunning(f"no node answers on {self._address()}") from None
            # Kept apart: getresponse() lets go of the socket when the node will close, the response still reads it.
            sock = _Socket(connection.sock, deadline)
            headers = {"Authorization": f"Bearer {self.token}"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            with _reply_broke_off():
                connection.request(method, API_PREFIX + path, body=payload, headers=headers)
                response = connection.getresponse()
            yield response, sock
        finally:
            connection.close()

    def call_blocking(self, method: str, path: str, body: Json | None = None) -> Json:
        """``call`` outside trio: one request, the JSON reply; ControlError for an error reply or a timeout."""
        deadline = time.monotonic() + CLIENT_TIMEOUT
        with self._send_blocking(method, path, body, deadline) as (response, sock):
            return _decode_reply(response.status, _read_bounded_blocking(response, sock))

    def run_stream_blocking(self, path: str, body: Json, on_event: Callable[[Json], None]) -> Json:
        """``run_stream`` outside trio: ``on_event`` sees each progress event; returns the result.

        Raises:
            NodeNotRunning: nothing listens on the node's port.
            ControlError: an error reply, the operation ended with an error event, or the stream broke off.
        """
        with self._send_blocking("POST", path, body, time.monotonic() + CLIENT_TIMEOUT) as (response, sock):
            if response.status != 200:
                _decode_reply(response.status, _read_bounded_blocking(response, sock))
            sock.wait_forever()  # the events come as fast as the operation makes them
            lines = _EventLines()
            while True:
                with _reply_broke_off():
                    chunk = response.read1(READ_SIZE)
                if not chunk:
                    break
                for event in lines.feed(chunk):
                    result = _stream_result(event)
                    if result is not None:
                        return result
                    on_event(event)
            lines.close()
        raise ControlError(502, "bad-reply", "the stream ended without a result")

    # Async calls: for code in trio.

    def _client(self) -> httpx.AsyncClient:
        import logging

        import httpx

        # httpx logs every request at INFO; the CLI's stderr is for the user.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        return httpx.AsyncClient(
            base_url=f"http://{self._address()}", headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(CLIENT_TIMEOUT, read=None), trust_env=False)

    @asynccontextmanager
    async def _send(self, method: str, path: str, body: Json | None) -> AsyncIterator[httpx.Response]:
        """One request; the response with its body still unread.  NodeNotRunning if nothing listens."""
        import httpx

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
        import trio

        with trio.fail_after(CLIENT_TIMEOUT):
            async with self._send(method, path, body) as response:
                return _decode_reply(response.status_code, await _read_bounded(response))

    @asynccontextmanager
    async def open_stream(self, path: str, body: Json) -> AsyncIterator[AsyncIterator[Json]]:
        """``POST /v1/<path>`` and yield an iterator over its events (the last is done or error).

        Leaving the block closes the connection, which cancels the operation in the node.
        """
        import trio

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
                result = _stream_result(event)
                if result is not None:
                    return result
                on_event(event)
        raise ControlError(502, "bad-reply", "the stream ended without a result")


class _Socket:
    """A reply's socket and the deadline its reads must meet (None: no deadline)."""

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self.sock = sock
        self.deadline = deadline

    def before_read(self) -> None:
        if self.deadline is not None:
            self.sock.settimeout(_left(self.deadline))

    def wait_forever(self) -> None:
        self.deadline = None
        self.sock.settimeout(None)


def _left(deadline: float) -> float:
    """Seconds left until ``deadline``; the read after it times out at once."""
    return max(deadline - time.monotonic(), 0.001)


@contextmanager
def _reply_broke_off() -> Iterator[None]:
    """A socket or HTTP failure while sending or reading, as the async client reports it."""
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        raise ControlError(502, "bad-reply", f"the node's reply broke off: {exc or type(exc).__name__}") from None


def _read_bounded_blocking(response: http.client.HTTPResponse, sock: _Socket) -> bytes:
    data = bytearray()
    while True:
        sock.before_read()
        with _reply_broke_off():
            chunk = response.read1(READ_SIZE)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            raise ControlError(502, "bad-reply", f"reply exceeds {MAX_RESPONSE_BYTES} bytes")


async def _read_bounded(response: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_RESPONSE_BYTES:
            raise ControlError(502, "bad-reply", f"reply exceeds {MAX_RESPONSE_BYTES} bytes")
    return bytes(data)


class _EventLines:
    """Splits a streamed reply's bytes into its NDJSON events, each line at most ``MAX_EVENT_BYTES``."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, chunk: bytes) -> list[Json]:
        """The events that ``chunk`` completes, in order."""
        self.buf += chunk
        events = []
        while (end := self.buf.find(b"\n")) >= 0:
            events.append(_event(bytes(self.buf[:end])))
            del self.buf[:end + 1]
        if len(self.buf) > MAX_EVENT_BYTES:
            raise ControlError(502, "bad-reply", f"event exceeds {MAX_EVENT_BYTES} bytes")
        return events

    def close(self) -> None:
        """The reply ended: ControlError if it ended inside an event."""
        if self.buf:
            raise ControlError(502, "bad-reply", "stream ended inside an event")


def _stream_result(event: Json) -> Json | None:
    """A stream's result if ``event`` is its ``done`` line, None for a progress event.

    Raises:
        ControlError: ``event`` is the stream's ``error`` line.
    """
    kind = event.get("event")
    if kind == "done":
        result = event.get("result")
        return result if isinstance(result, dict) else {}
    if kind == "error":
        err = event.get("error") or {}
        raise ControlError(500, str(err.get("code", "error")), str(err.get("message", "")))
    return None


async def _events(response: httpx.Response) -> AsyncIterator[Json]:
    """The NDJSON events of a streamed reply."""
    lines = _EventLines()
    async for chunk in response.aiter_bytes():
        for event in lines.feed(chunk):
            yield event
    lines.close()


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
