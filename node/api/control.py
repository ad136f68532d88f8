"""The node's local control API: HTTP + JSON on 127.0.0.1 (specs/network.md §6 Control API).

The running node (`mu node`) serves it (node/api/server.py: starlette on
hypercorn's trio worker); the CLI (`mu status`, `mu add`, `mu get`, ...)
is its client (node/api/client.py: blocking ``http.client`` for the CLI,
httpx in trio for tests and scripts).  The CLI sends ``Authorization:
Bearer <token>`` where the token is the content of ``control.token`` in the
data dir (64 hex digits, file mode 0600, new at each start); the port is in
``control.port``.  A browser logs in once through the URL ``mu ui`` prints
and then carries a session cookie (node/api/security.py).

Replies are one JSON object, or for long operations newline-delimited JSON
events (``application/x-ndjson``) ending with one ``{"event": "done",
"result": ...}`` or ``{"event": "error", "error": ...}`` line.  Errors are
``{"error": {"code": ..., "message": ...}}`` with an HTTP status.
"""

from node.api.client import CLIENT_TIMEOUT, MAX_EVENT_BYTES, MAX_RESPONSE_BYTES, ControlClient
from node.api.errors import ControlError, Emit, Handler, Json, NodeNotRunning, StreamHandler
from node.api.server import (
    API_PREFIX,
    HEADER_TIMEOUT,
    MAX_BODY_BYTES,
    MAX_CONTROL_CONNECTIONS,
    MAX_HEADER_BYTES,
    PORT_FILE,
    TOKEN_FILE,
    ControlServer,
    EventStream,
    Param,
    ParamKind,
    RouteInfo,
)

__all__ = [
    "API_PREFIX", "CLIENT_TIMEOUT", "HEADER_TIMEOUT", "MAX_BODY_BYTES", "MAX_CONTROL_CONNECTIONS",
    "MAX_EVENT_BYTES", "MAX_HEADER_BYTES", "MAX_RESPONSE_BYTES", "PORT_FILE", "TOKEN_FILE",
    "ControlClient", "ControlError", "ControlServer", "Emit", "EventStream", "Handler", "Json", "NodeNotRunning",
    "Param", "ParamKind", "RouteInfo", "StreamHandler",
]
