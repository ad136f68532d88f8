"""The control API server: a starlette app on hypercorn's trio worker (specs/network.md §6 Control API).

Services register their routes (``route``, ``stream_route``) and status
sections before ``serve``; each route declares its body fields (``params``)
so that bad arguments are refused with 400 before a handler runs, on every
route alike.  The web app mounts its pages with ``mount_ui``: they sit
behind the same guard (node/api/security.py) as the API.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from node.api.client import API_PREFIX, PORT_FILE, TOKEN_FILE
from node.api.errors import (
    NO_STORE,
    ControlError,
    Emit,
    Handler,
    Json,
    StreamHandler,
    error_json,
    error_response,
)
from node.api.security import (
    CSRF_COOKIE,
    LOGIN_PATH,
    SESSION_COOKIE,
    SESSION_TTL,
    Guard,
    Sessions,
    loopback_hosts,
)
from node.runtime.config import write_secret_file
from node.runtime.http import HttpLimits, bind_tcp, serve_asgi

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 64 * 1024
#: Connections served at once; more wait in the kernel's accept queue.
MAX_CONTROL_CONNECTIONS = 1024
#: Seconds to send the request headers (and, separately, the body).
HEADER_TIMEOUT = 10.0
#: Methods that reach the dispatcher (and get 404 or 405 there when unrouted).
API_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_HOST = "127.0.0.1"
LIMITS = HttpLimits(max_connections=MAX_CONTROL_CONNECTIONS, max_header_bytes=MAX_HEADER_BYTES,
                    header_timeout=HEADER_TIMEOUT)


class ParamKind(enum.Enum):
    """The JSON type of a body field."""

    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"

    def accepts(self, value: object) -> bool:
        if self is ParamKind.STRING:
            return isinstance(value, str)
        if self is ParamKind.INTEGER:
            return type(value) is int  # bool is an int subclass: not a count
        return isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Param:
    """One body field a route takes: its JSON type, and whether it must be there."""

    kind: ParamKind
    required: bool = False


Params = Mapping[str, Param]


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One registered route, as listed by ``ControlServer.routes`` (the table-driven tests use it).

    ``params`` None: the route did not declare its fields, the handler checks them alone.
    """

    method: str
    path: str
    streamed: bool
    params: Params | None


@dataclass(frozen=True, slots=True)
class _Route:
    info: RouteInfo
    handler: Handler | None
    stream: StreamHandler | None


def _check_params(params: Params | None, body: Json) -> None:
    """400 ``bad-argument`` for an unknown, missing or mistyped field (the handler checks ranges)."""
    if params is None:
        return
    for name, value in body.items():
        param = params.get(name)
        if param is None:
            raise ControlError(400, "bad-argument", f"unknown field {name!r}")
        if value is None and not param.required:
            continue  # JSON null on an optional field: the same as leaving it out (specs/network.md §6)
        if not param.kind.accepts(value):
            raise ControlError(400, "bad-argument", f"{name} must be a {param.kind.value}")
    for name, param in params.items():
        if param.required and name not in body:
            raise ControlError(400, "bad-argument", f"{name} is required")


async def _read_body(request: Request) -> bytes:
    """The request body, at most ``MAX_BODY_BYTES``, within ``HEADER_TIMEOUT``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ControlError(413, "body-too-large", f"body exceeds {MAX_BODY_BYTES} bytes")
    body = bytearray()
    with trio.move_on_after(HEADER_TIMEOUT) as scope:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ControlError(413, "body-too-large", f"body exceeds {MAX_BODY_BYTES} bytes")
    if scope.cancelled_caught:
        raise ControlError(408, "body-timeout", f"body not received within {HEADER_TIMEOUT} s")
    return bytes(body)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _parse_body(raw: bytes) -> Json:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(400, "bad-json", f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError(400, "bad-json", "body must be a JSON object")
    return body


class EventStream(Response):
    """A streamed reply: NDJSON events, then one ``done`` or ``error`` line.

    The handler runs while the reply is sent; if the client disconnects,
    the handler is cancelled (the operation stops with it).
    """

    media_type = "application/x-ndjson"

    def __init__(self, handler: StreamHandler, body: Json) -> None:
        # Not Response.__init__: it would declare a Content-Length of 0.  No
        # length at all: hypercorn sends the body chunked (HTTP/1.1).
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", self.media_type.encode()), (b"cache-control", b"no-store")]
        self._handler = handler
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        lock = trio.Lock()  # handlers may emit from several tasks at once

        async def emit(event: Json) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": json.dumps(event).encode() + b"\n",
                            "more_body": True})

        async def watch_disconnect(cancel: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect, nursery.cancel_scope)
            last = await _run_stream(self._handler, self._body, emit)
            await emit(last)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


async def _run_stream(handler: StreamHandler, body: Json, emit: Emit) -> Json:
    try:
        return {"event": "done", "result": await handler(body, emit)}
    except ControlError as exc:
        return {"event": "error", **error_json(exc.code, exc.message)}
    except Exception as exc:  # a handler bug must not take the node down
        log.exception("control: stream handler failed")
        return {"event": "error", **error_json("internal", f"{type(exc).__name__}: {exc}")}


class ControlServer:
    """The control API of one node.

    Args:
        data_dir: where the token and port files are written.
        node_id: the node's ID, reported by ``GET /v1/status``.
        host: the address to listen on; 127.0.0.1 unless told otherwise.
    """

    def __init__(self, data_dir: Path, node_id: bytes, *, host: str = DEFAULT_HOST) -> None:
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self.host = host
        self.sessions = Sessions()
        self._routes: dict[tuple[str, str], _Route] = {}
        self._status: dict[str, Callable[[], Json]] = {}
        self._ui: list[BaseRoute] = []
        self._token = b""
        self._started = time.monotonic()
        self.port = 0
        self.route("GET", "status", self._handle_status, params={})
        self.route("POST", "login-link", self._handle_login_link, params={})
        self.route("GET", "routes", self._handle_routes, params={})

    def route(self, method: str, name: str, handler: Handler, *, params: Params | None = None) -> None:
        """Serve ``METHOD /v1/<name>`` with ``handler(body) -> reply``; ``params``: its body fields."""
        path = API_PREFIX + name
        self._routes[(method, path)] = _Route(RouteInfo(method, path, False, params), handler, None)

    def stream_route(self, name: str, handler: StreamHandler, *, params: Params | None = None) -> None:
        """Serve ``POST /v1/<name>`` as an event stream: ``handler(body, emit) -> result``."""
        path = API_PREFIX + name
        self._routes[("POST", path)] = _Route(RouteInfo("POST", path, True, params), None, handler)

    def routes(self) -> list[RouteInfo]:
        """Every registered API route, in registration order."""
        return [route.info for route in self._routes.values()]

    def add_status(self, section: str, report: Callable[[], Json]) -> None:
        """Add a section to ``GET /v1/status``, filled by ``report()`` at each call."""
        self._status[section] = report

    def mount_ui(self, routes: Sequence[BaseRoute]) -> None:
        """Serve the web app's pages and files (starlette routes, e.g. a ``Mount`` of ``StaticFiles``).

        They are matched after ``/v1/`` and ``/login``, behind the same
        guard: a browser needs the session cookie (and the CSRF header on
        state-changing requests), and every reply carries the
        Content-Security-Policy.  Call before ``serve``.
        """
        self._ui.extend(routes)

    def connect_host(self) -> str:
        """The address a client on this machine dials: 127.0.0.1 for a wildcard or loopback bind."""
        if self.host in ("0.0.0.0", "::") or _is_loopback(self.host):
            return DEFAULT_HOST
        return self.host

    def login_url(self) -> str:
        """A one-time URL that logs a browser in (``mu ui``)."""
        host = self.connect_host()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{LOGIN_PATH}?token={self.sessions.issue_login()}"

    async def _handle_status(self, body: Json) -> Json:
        reply: Json = {"node_id": self.node_id.hex(), "uptime_s": round(time.monotonic() - self._started, 3)}
        for section, report in self._status.items():
            reply[section] = report()
        return reply

    async def _handle_routes(self, body: Json) -> Json:
        return {"routes": [
            {"method": r.method, "path": r.path, "streamed": r.streamed,
             "params": None if r.params is None else {
                 name: {"kind": p.kind.value, "required": p.required} for name, p in r.params.items()}}
            for r in self.routes()]}

    async def _handle_login_link(self, body: Json) -> Json:
        return {"url": self.login_url()}

    async def _login(self, request: Request) -> Response:
        if self.sessions.throttled():
            return error_response(429, "too-many-logins", "too many wrong login tokens; wait a minute")
        session = self.sessions.redeem(request.query_params.get("token", ""))
        if session is None:
            return error_response(401, "unauthorized", "this login URL is unknown, used or expired; run `mu ui`")
        reply = RedirectResponse("/", status_code=303, headers=NO_STORE)
        max_age = int(SESSION_TTL)
        reply.set_cookie(SESSION_COOKIE, session.cookie, max_age=max_age, httponly=True, samesite="strict")
        reply.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, httponly=False, samesite="strict")
        return reply

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        route = self._routes.get((request.method, path))
        try:
            if route is None:
                if any(p == path for _, p in self._routes):
                    raise ControlError(405, "method-not-allowed", f"{request.method} not allowed on {path}")
                raise ControlError(404, "not-found", f"no such endpoint {path}")
            if request.query_params:
                raise ControlError(400, "bad-argument", "the API takes no query parameters; send a JSON body")
            raw = await _read_body(request)
            if raw and route.info.method == "GET":
                raise ControlError(400, "bad-argument", f"GET {path} takes no body")
            body = _parse_body(raw)
            _check_params(route.info.params, body)
            if route.stream is not None:
                return EventStream(route.stream, body)
            assert route.handler is not None
            return JSONResponse(await route.handler(body), headers=NO_STORE)
        except ControlError as exc:
            return error_response(exc.status, exc.code, exc.message)
        except Exception as exc:  # a handler bug must not take the node down
            log.exception("control: handler failed")
            return error_response(500, "internal", f"{type(exc).__name__}: {exc}")

    def app(self) -> Guard:
        """The whole ASGI application: the guard around the API, the login route and the UI."""

        async def http_error(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, HTTPException) else 500
            code = {404: "not-found", 405: "method-not-allowed"}.get(status, "error")
            return error_response(status, code, f"{request.method} {request.url.path}: HTTP {status}")

        routes: list[BaseRoute] = [
            Route(LOGIN_PATH, self._login, methods=["GET"]),
            Route(API_PREFIX + "{name:path}", self._dispatch, methods=list(API_METHODS)),
            *self._ui,
        ]
        inner = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
        hosts = frozenset[str]()

        def current_hosts() -> frozenset[str]:
            nonlocal hosts
            if not hosts:
                hosts = loopback_hosts(self.port, self.host)
            return hosts

        return Guard(inner, token=lambda: self._token, sessions=self.sessions, hosts=current_hosts,
                     max_header_bytes=MAX_HEADER_BYTES)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host`` (OS-chosen port), write the token and port files, serve forever.

        ``task_status.started`` gets the port.  The port file is removed on
        exit if it still names our port: a file another server wrote since is
        not ours to delete (``mu node`` also holds the data dir's lock, so
        under it no other server writes one).
        """
        token = secrets.token_hex(TOKEN_BYTES).encode()
        write_secret_file(self.data_dir / TOKEN_FILE, token)
        self._token = token
        sock = bind_tcp(self.host, 0)
        self.port = sock.getsockname()[1]
        if not _is_loopback(self.host):
            # Other machines can now reach the login page and the API: both still need the
            # token or a session, and the Host check (specs/network.md §6 Security).
            log.warning("the control API and web app listen on %s:%d, reachable from other machines; "
                        "every request still needs the control token or a login", self.host, self.port)
        port_path = self.data_dir / PORT_FILE
        tmp = port_path.with_name(PORT_FILE + ".tmp")
        connect = self.connect_host()
        tmp.write_text(f"{self.port}\n" + (f"{connect}\n" if connect != DEFAULT_HOST else ""))
        os.replace(tmp, port_path)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_asgi, self.app(), sock, LIMITS)
                task_status.started(self.port)
        finally:
            try:
                ours = port_path.read_text().split("\n")[0] == str(self.port)
            except OSError:
                ours = False  # already gone
            if ours:
                port_path.unlink()
