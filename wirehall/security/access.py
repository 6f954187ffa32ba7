"""Who may run an endpoint: `requires_auth` marks it, `access_denied` answers for a scope.

The HTTP and WebSocket runners call `access_denied(endpoint, scope)` before running an
endpoint and answer 401 or 403 (a refused handshake for WebSockets) when it says so.
This module reads only the scope: it imports no middleware and nothing of the HTTP or
WebSocket layers, so both can use it (`AuthenticationMiddleware`, which fills
`scope["user"]`, lives in `wirehall.security.auth`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from wirehall.errors import ConfigurationError
from wirehall.types import Scope

__all__ = ["AUTH_ATTRIBUTE", "AuthRequirement", "access_denied", "requires_auth", "user_roles"]

AUTH_ATTRIBUTE = "__wirehall_auth__"

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
