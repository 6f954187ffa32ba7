"""The exception hierarchy. Every error wirehall raises is a `WirehallError`."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

__all__ = [
    "BackplaneError",
    "ConfigurationError",
    "HTTPError",
    "MissingDependencyError",
    "WebSocketDisconnectError",
    "WebSocketError",
    "WebSocketStateError",
    "WirehallError",
]


class WirehallError(Exception):
    """Base class of every error raised by wirehall."""


class ConfigurationError(WirehallError):
    """The app cannot start: a bad setting, route or dependency."""


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional package is missing; the message names the extra to install."""

    def __init__(self, package: str, *, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"the optional package {package!r} is not installed; "
            f"install it with: pip install 'wirehall[{extra}]'"
        )


class HTTPError(WirehallError):
    """Raised in an endpoint, it becomes the HTTP response with that status.

    The body is JSON `{"error": detail}`; `headers` are added to the response.
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if detail is None:
            try:
                detail = HTTPStatus(status).phrase
            except ValueError:
                detail = "error"
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        super().__init__(f"{status}: {detail}")


class WebSocketError(WirehallError):
    """Closes the WebSocket with `code` and `reason`.

    Raised before the handshake is accepted, it refuses the handshake (HTTP 403).
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}" if reason else str(code))


class WebSocketStateError(WirehallError):
    """A WebSocket operation was used out of order (e.g. send before accept)."""


class WebSocketDisconnectError(WirehallError):
    """The peer went away (or the socket was closed) while we were receiving or sending."""

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"websocket closed with code {code}" + (f": {reason}" if reason else ""))


class BackplaneError(WirehallError):
    """The backplane was lost or refused us."""
