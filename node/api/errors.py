"""The control API's error type and its JSON shape (specs/network.md §6 Control API, Errors)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

Json = dict[str, Any]
Emit = Callable[[Json], Awaitable[None]]
Handler = Callable[[Json], Awaitable[Json]]
StreamHandler = Callable[[Json, Emit], Awaitable[Json]]

#: Headers on every control API reply: nothing is cached, nothing is sniffed.
NO_STORE = {"Cache-Control": "no-store"}


class ControlError(Exception):
    """An error reply: HTTP status, a stable code string and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NodeNotRunning(ControlError):
    """No node answers on the data dir's control port."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "not-running", message)


def error_json(code: str, message: str) -> Json:
    """The body of an error reply, and of a stream's final ``error`` event's ``error``."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # Imported here, not at the top: the CLI's client imports this module, and starlette is the server's (issue 22).
    from starlette.responses import JSONResponse

    return JSONResponse(error_json(code, message), status_code=status, headers={**NO_STORE, **(headers or {})})
