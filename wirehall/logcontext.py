"""What a log line knows about the request or connection it was written in.

The app sets one `LogContext` per HTTP request and WebSocket connection (a contextvar, so
each request's task sees its own), and `wirehall run --log-format json` writes its fields
on every line logged while it is current, the app's own lines included. Only when a log
formatter that reads it was built first (`enable()`, which the JSON formatter calls): an
app that logs no context pays one attribute check per request. Setting it costs one small
object; whatever takes work (the request id) is computed only when a log line asks for it.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

from wirehall.types import Scope

__all__ = [
    "REQUEST_ID_HEADER",
    "LogContext",
    "attach_connection",
    "current_log_context",
    "enable",
    "enter",
    "is_enabled",
]

REQUEST_ID_HEADER = b"x-request-id"
"""A request id a proxy or client gives is taken from this header (when it is sane)."""

# what a proxy's ids look like (UUIDs, hex, base64url, `host/123`): nothing that could
# break a log line or carry a `name=value` pair past the redaction
_SANE_ID = re.compile(rb"[A-Za-z0-9._:/+\-]{1,128}")

_current: ContextVar[LogContext | None] = ContextVar("wirehall_log_context", default=None)
# like logging's own configuration, this is the process's: set when its logging is set up
_wanted = [False]


class LogContext:
    """The request or connection being served: its route template, method, ids.

    Args:
        scope: the ASGI scope of the request or WebSocket handshake.
        route: the matched route's path template (`/items/{id:int}`), None when no route matched.
    """

    __slots__ = ("_request_id", "connection_id", "route", "scope")

    def __init__(self, scope: Scope, route: str | None = None) -> None:
        self.scope = scope
        self.route = route
        self.connection_id: str | None = None
        self._request_id: str | None = None

    @property
    def method(self) -> str:
        """The HTTP method, or "WEBSOCKET" for a connection."""
        method: str | None = self.scope.get("method")
        return method if method is not None else "WEBSOCKET"

    @property
    def request_id(self) -> str:
        """The client's `X-Request-ID` when it is sane (1-128 of `A-Z a-z 0-9 . _ : / + -`),
        else a random id (16 hex digits), made the first time it is asked for."""
        if self._request_id is None:
            self._request_id = _given_request_id(self.scope) or os.urandom(8).hex()
        return self._request_id


def _given_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else None
    return None


def enable() -> None:
    """Have apps started from now on keep a `LogContext` per request and connection.

    A log formatter or filter of your own that reads `current_log_context()` calls this when
    it is built; `wirehall run --log-format json` does. Logging is configured before the app
    starts, so this comes first; an app already serving keeps what it chose at startup.
    """
    _wanted[0] = True


def is_enabled() -> bool:
    """Whether something that reads the log context was set up in this process (`enable()`)."""
    return _wanted[0]


def enter(scope: Scope, route: str | None = None) -> None:
    """Make a new `LogContext` current for the rest of this task (a request, a connection)."""
    _current.set(LogContext(scope, route))


def attach_connection(connection_id: str) -> None:
    """Name the WebSocket connection being served in the current context (when there is one)."""
    context = _current.get()
    if context is not None:
        context.connection_id = connection_id


def current_log_context() -> LogContext | None:
    """The request or connection this code runs for, or None outside of one."""
    return _current.get()
