"""Who may talk to the control API, and from where (specs/network.md §6 Control API, Security).

Two ways in:

* the CLI sends ``Authorization: Bearer <token>`` (``control.token``);
  browsers never attach that header on their own, so these requests need
  no CSRF token;
* a browser carries the ``mu_session`` cookie, set by a one-time login URL
  (``mu ui`` prints it, as Jupyter's token login).  The cookie is HttpOnly
  and SameSite=Strict; every state-changing request (any method but GET,
  HEAD, OPTIONS) authenticated by it must also carry the session's CSRF
  token in ``X-CSRF-Token`` (the page reads it from the ``mu_csrf``
  cookie: double submit, compared with the server's copy).

Before either, the ``Host`` header must name this server (a page from
another site that rebinds its DNS name to 127.0.0.1 sends its own name)
and an ``Origin``, when present, must be this server.  Every reply carries
a strict Content-Security-Policy and the headers that keep it out of frames
and caches.
"""

from __future__ import annotations

import enum
import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.api.errors import error_response

SESSION_COOKIE = "mu_session"
CSRF_COOKIE = "mu_csrf"
CSRF_HEADER = "x-csrf-token"
LOGIN_PATH = "/login"
#: Bytes of randomness in login tokens, session cookies and CSRF tokens.
SECRET_BYTES = 32
#: Seconds a login URL stays usable (once).
LOGIN_TTL = 300.0
#: Login URLs issued and not yet used; the oldest is dropped first.
MAX_LOGIN_LINKS = 16
#: Seconds a browser session lasts; sessions also end when the node stops.
SESSION_TTL = 12 * 3600.0
#: Browser sessions kept at once; the oldest is dropped first.
MAX_SESSIONS = 64
#: Wrong login tokens accepted per ``LOGIN_FAILURE_WINDOW`` before 429.
MAX_LOGIN_FAILURES = 10
LOGIN_FAILURE_WINDOW = 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Pages load only the node's own scripts, styles and media; no inline
#: script, no frames, no form posts elsewhere, no third-party requests.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; font-src 'self'; connect-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class AuthKind(enum.Enum):
    """How a request proved it may use the API."""

    BEARER = "bearer"  # the CLI: the control token in Authorization
    COOKIE = "cookie"  # a browser: the session cookie


#: Where the guard leaves the request's AuthKind in the ASGI scope.
AUTH_SCOPE_KEY = "mu.auth"


@dataclass(frozen=True, slots=True)
class Session:
    """One browser login: the cookie's value, its CSRF token, when it ends."""

    cookie: str
    csrf: str
    expires: float


class Sessions:
    """Login URLs and browser sessions, all in memory, all bounded.

    Args:
        clock: monotonic seconds (``time.monotonic``; tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._logins: OrderedDict[str, float] = OrderedDict()  # token -> expiry
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._failures: deque[float] = deque(maxlen=MAX_LOGIN_FAILURES)

    def issue_login(self) -> str:
        """A new one-time login token, usable for ``LOGIN_TTL`` seconds."""
        token = secrets.token_urlsafe(SECRET_BYTES)
        self._logins[token] = self._clock() + LOGIN_TTL
        while len(self._logins) > MAX_LOGIN_LINKS:
            self._logins.popitem(last=False)
        return token

    def throttled(self) -> bool:
        """True while ``MAX_LOGIN_FAILURES`` wrong tokens came within ``LOGIN_FAILURE_WINDOW``."""
        return (len(self._failures) == MAX_LOGIN_FAILURES
                and self._clock() - self._failures[0] < LOGIN_FAILURE_WINDOW)

    def redeem(self, token: str) -> Session | None:
        """Trade a login token for a new session; None (and a counted failure) if unknown or expired."""
        now = self._clock()
        expiry = None
        for known in list(self._logins):
            if hmac.compare_digest(known.encode(), token.encode()):
                expiry = self._logins.pop(known)
        if expiry is None or expiry <= now:
            self._failures.append(now)
            return None
        session = Session(secrets.token_urlsafe(SECRET_BYTES), secrets.token_urlsafe(SECRET_BYTES), now + SESSION_TTL)
        self._sessions[session.cookie] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def lookup(self, cookie: str) -> Session | None:
        """The live session whose cookie this is, if any."""
        session = self._sessions.get(cookie)
        if session is None or not hmac.compare_digest(session.cookie.encode(), cookie.encode()):
            return None
        if session.expires <= self._clock():
            del self._sessions[cookie]
            return None
        return session


def loopback_hosts(port: int, bound_host: str) -> frozenset[str]:
    """The ``Host`` values naming a server on ``bound_host:port`` from this machine."""
    names = {"127.0.0.1", "localhost", "[::1]", f"[{bound_host}]" if ":" in bound_host else bound_host}
    return frozenset(f"{name}:{port}" for name in names)


class Guard:
    """ASGI middleware: Host and Origin checks, authentication, CSRF, security headers.

    Args:
        app: the application behind the guard.
        token: the current bearer token (``control.token``).
        sessions: the browser sessions.
        hosts: the accepted ``Host`` values (``host:port``), read at each request.
        max_header_bytes: the largest request target plus headers (431 above).
    """

    def __init__(self, app: ASGIApp, *, token: Callable[[], bytes], sessions: Sessions,
                 hosts: Callable[[], frozenset[str]], max_header_bytes: int) -> None:
        self._app = app
        self._max_header_bytes = max_header_bytes
        self._token = token
        self._sessions = sessions
        self._hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = self._check(HTTPConnection(scope), scope)
        if refusal is not None:
            status, code, message = refusal
            headers = {"WWW-Authenticate": 'Bearer realm="mu"'} if status == 401 else None
            await error_response(status, code, message, headers)(scope, receive, send_secured)
            return
        await self._app(scope, receive, send_secured)

    def _check(self, conn: HTTPConnection, scope: Scope) -> tuple[int, str, str] | None:
        """None if the request may go on, else (status, code, message); sets the scope's AuthKind."""
        # h11 bounds a header block that arrives in pieces; one that arrives
        # whole is measured here (request target plus ": " and CRLF per line).
        size = len(scope["raw_path"]) + len(scope["query_string"]) + sum(
            len(name) + len(value) + 4 for name, value in scope["headers"])
        if size > self._max_header_bytes:
            return 431, "header-too-large", f"headers exceed {self._max_header_bytes} bytes"
        hosts = self._hosts()
        if conn.headers.get("host", "").lower() not in hosts:
            return 403, "forbidden-host", "the Host header does not name this node"
        origin = conn.headers.get("origin")
        if origin is not None and origin.lower() not in {f"http://{host}" for host in hosts}:
            return 403, "forbidden-origin", "requests from other sites are refused"
        if conn.url.path == LOGIN_PATH:
            return None  # the login route checks its own one-time token
        scheme, _, given = conn.headers.get("authorization", "").partition(" ")
        if scheme:
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token()):
                return 401, "unauthorized", "wrong bearer token (see control.token)"
            scope[AUTH_SCOPE_KEY] = AuthKind.BEARER
            return None
        session = self._sessions.lookup(conn.cookies.get(SESSION_COOKIE, ""))
        if session is None:
            return 401, "unauthorized", "log in first: `mu ui` prints a login URL; the CLI sends control.token"
        if scope["method"] not in SAFE_METHODS:
            given_csrf = conn.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given_csrf.encode(), session.csrf.encode()):
                return 403, "csrf", f"a state-changing request needs the session's {CSRF_HEADER} header"
        scope[AUTH_SCOPE_KEY] = AuthKind.COOKIE
        return None
