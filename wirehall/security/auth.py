"""Who is asking (`AuthenticationMiddleware`) and who may (`requires_auth`, `access_denied`).

`AuthenticationMiddleware` runs an `authenticate(connection)` callback on every HTTP
request and WebSocket handshake and puts its answer in `scope["user"]` (None when
anonymous). `requires_auth` marks an endpoint, a controller class or a controller
method; the runners call `access_denied(endpoint, scope)` before running it and answer
401 or 403 (a refused handshake for WebSockets) when it says so.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from wirehall.connection import Connection
from wirehall.errors import ConfigurationError
from wirehall.security._responses import send_json_error
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

AUTH_ATTRIBUTE = "__wirehall_auth__"

Authenticator = Callable[[Connection], Awaitable[Any]]
"""Returns the user for a connection, or None when it is anonymous."""

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class AuthRequirement:
    """What `requires_auth` recorded: a signed-in user holding every role in `roles`."""

    roles: frozenset[str] = frozenset()


@overload
def requires_auth(roles: F, /) -> F: ...  # bare `@requires_auth` on a function or class


@overload
def requires_auth(roles: Iterable[str] | str = ..., /) -> Callable[[T], T]: ...


def requires_auth(roles: Any = (), /) -> Any:
    """Require a signed-in user, holding all of `roles`, for an endpoint, controller or method.

    Use as `@requires_auth()`, `@requires_auth` or `@requires_auth(["admin"])`. On a
    controller class it covers every method (and subclasses); on a method only that one.
    """
    if callable(roles):  # used bare: `@requires_auth`
        return _mark(roles, AuthRequirement())
    names = (roles,) if isinstance(roles, str) else tuple(roles)
    for name in names:
        if not isinstance(name, str):
            raise ConfigurationError(f"requires_auth roles must be strings, got {name!r}")
    requirement = AuthRequirement(frozenset(names))

    def decorate(target: T) -> T:
        return _mark(target, requirement)

    return decorate


def _mark(target: T, requirement: AuthRequirement) -> T:
    try:
        setattr(target, AUTH_ATTRIBUTE, requirement)
    except (AttributeError, TypeError) as exc:
        raise ConfigurationError(
            f"requires_auth cannot mark {target!r}; use it on a function, a controller class "
            "or a controller method"
        ) from exc
    return target


def user_roles(user: Any) -> frozenset[str]:
    """The roles of `user`: its `roles` attribute, or `user["roles"]` for a dict."""
    roles = user.get("roles") if isinstance(user, dict) else getattr(user, "roles", None)
    if not roles:
        return frozenset()
    if isinstance(roles, str):
        return frozenset((roles,))
    try:
        return frozenset(role for role in roles if isinstance(role, str))
    except TypeError:  # not iterable: no roles rather than a crash
        return frozenset()


def access_denied(endpoint: object, scope: Scope) -> int | None:
    """None when `scope` may run `endpoint`; 401 when sign-in is needed; 403 for missing roles.

    A user object whose `is_authenticated` attribute is False counts as anonymous.
    """
    requirement: AuthRequirement | None = getattr(endpoint, AUTH_ATTRIBUTE, None)
    if requirement is None:
        return None
    user = scope.get("user")
    if user is None or getattr(user, "is_authenticated", True) is False:
        return 401
    if requirement.roles and not requirement.roles <= user_roles(user):
        return 403
    return None


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
