"""Who is asking: `AuthenticationMiddleware` and the authenticators it runs.

`AuthenticationMiddleware` runs an `authenticate(connection)` callback on every HTTP
request and WebSocket handshake and puts its answer in `scope["user"]` (None when
anonymous). Who may run an endpoint (`requires_auth`, `access_denied`) is decided in
`wirehall.security.access`, which the HTTP and WebSocket runners import without this
middleware; its names are re-exported here.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wirehall.connection import Connection
from wirehall.errors import ConfigurationError
from wirehall.security._responses import send_json_error
from wirehall.security.access import (
    AUTH_ATTRIBUTE,
    AuthRequirement,
    access_denied,
    requires_auth,
    user_roles,
)
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket.codes import CloseCode
from wirehall.websocket.handler import WebSocketHandler

__all__ = [
    "AUTH_ATTRIBUTE",
    "AuthRequirement",
    "AuthenticationMiddleware",
    "Authenticator",
    "access_denied",
    "bearer_token",
    "requires_auth",
    "session_user",
    "user_roles",
]

logger = logging.getLogger(__name__)

Authenticator = Callable[[Connection], Awaitable[Any]]
"""Returns the user for a connection, or None when it is anonymous."""


class AuthenticationMiddleware:
    """Sets `scope["user"]` from `authenticate(connection)` for HTTP requests and WebSockets.

    `authenticate` returns the user or None (anonymous: a bad or unknown credential is
    simply anonymous). If it raises, the error is logged and the request gets a 500
    (a WebSocket handshake is refused with 1011); nothing about the error leaks.
    """

    __slots__ = ("_is_async", "app", "authenticate")

    def __init__(self, app: ASGIApp, authenticate: Authenticator) -> None:
        self.app = app
        self.authenticate = authenticate
        self._is_async = inspect.iscoroutinefunction(authenticate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        try:
            result = self.authenticate(Connection(scope))
            user = await result if self._is_async or inspect.isawaitable(result) else result
        except Exception:  # the boundary that runs user code
            logger.exception("authentication callback failed for %s %s", kind, scope.get("path"))
            if kind == "http":
                await send_json_error(send, 500, "Internal Server Error")
            else:
                await WebSocketHandler(scope, receive, send).refuse(
                    500, "Internal Server Error", close_code=CloseCode.INTERNAL_ERROR
                )
            return
        scope["user"] = user
        await self.app(scope, receive, send)


def session_user(key: str = "user") -> Authenticator:
    """An authenticator returning `scope["session"][key]` (needs `SessionMiddleware` first)."""

    async def authenticate(connection: Connection) -> Any:
        session = connection.scope.get("session")
        if session is None:
            raise ConfigurationError(
                "session_user() found no session; add SessionMiddleware before (outside) "
                "AuthenticationMiddleware"
            )
        return session.get(key)

    return authenticate


def bearer_token(verify: Callable[[str], Awaitable[Any]]) -> Authenticator:
    """An authenticator passing the `Authorization: Bearer TOKEN` value to `verify`.

    For WebSocket handshakes, which browsers cannot give headers, a `token` query
    parameter is read when there is no such header. `verify` returns the user, or None
    for a bad or unknown token. No token at all means anonymous (verify is not called).
    """

    async def authenticate(connection: Connection) -> Any:
        token = _bearer(connection.headers.get("authorization", ""))
        if token is None and connection.scope["type"] == "websocket":
            token = connection.query.get("token") or None
        if token is None:
            return None
        return await verify(token)

    return authenticate


def _bearer(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
