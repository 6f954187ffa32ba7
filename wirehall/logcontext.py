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
from collections.abc import Iterable
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
        method: the HTTP method, None for a WebSocket connection (`method` is then "WEBSOCKET").
        route: the matched route's path template (`/items/{id:int}`), None when no route matched.
        headers: the request's (or handshake's) ASGI headers, read for `X-Request-ID` when a
            line first asks for the request id.

    It holds no reference to the scope: uvicorn keeps a finished request's context alive
    until the connection's next request (its keep-alive timer), and a whole scope kept that
    long made the garbage collector run ten times as often under load.
    """

    __slots__ = ("_headers", "_request_id", "connection_id", "method", "route")

    def __init__(
        self, method: str | None, route: str | None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        self.method = method if method is not None else "WEBSOCKET"
        self.route = route
        self.connection_id: str | None = None
        self._headers: Iterable[tuple[bytes, bytes]] | None = headers
        self._request_id: str | None = None

    @property
    def request_id(self) -> str:
        """The client's `X-Request-ID` when it is sane (1-128 of `A-Z a-z 0-9 . _ : / + -`),
        else a random id (16 hex digits), made the first time it is asked for."""
        if self._request_id is None:
            self._request_id = _given_request_id(self._headers or ()) or os.urandom(8).hex()
            self._headers = None
        return self._request_id


def _given_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
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
    _current.set(LogContext(scope.get("method"), route, scope.get("headers") or ()))


def attach_connection(connection_id: str) -> None:
    """Name the WebSocket connection being served in the current context (when there is one)."""
    context = _current.get()
    if context is not None:
        context.connection_id = connection_id


def current_log_context() -> LogContext | None:
    """The request or connection this code runs for, or None outside of one."""
    return _current.get()
