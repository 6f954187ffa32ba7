"""Route registration: the decorators shared by the app and its groups, and `RouteGroup`.

`Registrar` is the app's base class (`Wirehall` implements `_register_http` and
`_register_websocket`); a `RouteGroup` adds its prefix and passes registrations up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from wirehall.errors import ConfigurationError

__all__ = ["Registrar", "RouteGroup"]

F = TypeVar("F", bound=Callable[..., Any])


class Registrar:
    """Route decorators shared by the app and its groups."""

    def _register_http(
        self,
        path: str,
        endpoint: Any,
        methods: Sequence[str] | None,
        name: str | None,
        status_code: int | None = None,
    ) -> None:
        raise NotImplementedError

    def _register_websocket(self, path: str, endpoint: Any, name: str | None) -> None:
        raise NotImplementedError

    def route(
        self,
        path: str,
        *,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        status_code: int | None = None,
    ) -> Callable[[F], F]:
        """Register a function (GET unless `methods` says otherwise) or an HTTPController class.

        `status_code` is the status of what the endpoint returns (default 200, 204 for None);
        a returned Response or `(value, status)` keeps its own.
        """
        if status_code is not None and not (isinstance(status_code, int) and 100 <= status_code <= 599):
            raise ConfigurationError(
                f"status_code={status_code!r} for {path}; use an HTTP status from 100 to 599"
            )

        def decorator(endpoint: F) -> F:
            self._register_http(path, endpoint, methods, name, status_code)
            return endpoint

        return decorator

    def get(self, path: str, *, name: str | None = None, status_code: int | None = None) -> Callable[[F], F]:
        """Register a GET endpoint (HEAD is served with it)."""
        return self.route(path, methods=["GET"], name=name, status_code=status_code)

    def post(self, path: str, *, name: str | None = None, status_code: int | None = None) -> Callable[[F], F]:
        """Register a POST endpoint."""
        return self.route(path, methods=["POST"], name=name, status_code=status_code)

    def put(self, path: str, *, name: str | None = None, status_code: int | None = None) -> Callable[[F], F]:
        """Register a PUT endpoint."""
        return self.route(path, methods=["PUT"], name=name, status_code=status_code)

    def patch(
        self, path: str, *, name: str | None = None, status_code: int | None = None
    ) -> Callable[[F], F]:
        """Register a PATCH endpoint."""
        return self.route(path, methods=["PATCH"], name=name, status_code=status_code)

    def delete(
        self, path: str, *, name: str | None = None, status_code: int | None = None
    ) -> Callable[[F], F]:
        """Register a DELETE endpoint."""
        return self.route(path, methods=["DELETE"], name=name, status_code=status_code)

    def options(
        self, path: str, *, name: str | None = None, status_code: int | None = None
    ) -> Callable[[F], F]:
        """Register an OPTIONS endpoint."""
        return self.route(path, methods=["OPTIONS"], name=name, status_code=status_code)

    def websocket(self, path: str, *, name: str | None = None) -> Callable[[F], F]:
        """Register a WebSocketController class or a function endpoint for WebSocket connections."""

        def decorator(endpoint: F) -> F:
            self._register_websocket(path, endpoint, name)
            return endpoint

        return decorator

    def add_route(
        self,
        path: str,
        endpoint: Any,
        *,
        methods: Sequence[str] | None = None,
        name: str | None = None,
        status_code: int | None = None,
    ) -> None:
        """Register an HTTP endpoint without a decorator."""
        self.route(path, methods=methods, name=name, status_code=status_code)(endpoint)

    def add_websocket_route(self, path: str, endpoint: Any, *, name: str | None = None) -> None:
        """Register a WebSocket endpoint without a decorator."""
        self._register_websocket(path, endpoint, name)


class RouteGroup(Registrar):
    """Routes sharing a path prefix (and a name prefix): `api = app.group("/api")`."""

    def __init__(self, parent: Registrar, prefix: str, name_prefix: str = "") -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ConfigurationError(f"group prefix {prefix!r} must start with '/' and not end with one")
        self.parent = parent
        self.prefix = prefix
        self.name_prefix = name_prefix

    def _name(self, name: str | None) -> str | None:
        return f"{self.name_prefix}{name}" if name and self.name_prefix else name

    def _register_http(
        self,
        path: str,
        endpoint: Any,
        methods: Sequence[str] | None,
        name: str | None,
        status_code: int | None = None,
    ) -> None:
        self.parent._register_http(self.prefix + path, endpoint, methods, self._name(name), status_code)

    def _register_websocket(self, path: str, endpoint: Any, name: str | None) -> None:
        self.parent._register_websocket(self.prefix + path, endpoint, self._name(name))

    def group(self, prefix: str, *, name_prefix: str = "") -> RouteGroup:
        """A nested group."""
        return RouteGroup(self, prefix, name_prefix)  # each level adds its own name prefix
