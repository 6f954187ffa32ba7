"""Answer only for the host names the app is meant to serve (stops Host-header attacks)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from wirehall.errors import ConfigurationError
from wirehall.security._netloc import split_host
from wirehall.security._responses import send_json_error
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["TrustedHostMiddleware"]

logger = logging.getLogger(__name__)

_INVALID = "invalid Host header"


class TrustedHostMiddleware:
    """Refuse requests and WebSocket handshakes whose `Host` is not in `allowed_hosts`.

    Args:
        allowed_hosts: names like `example.com`, `127.0.0.1` or `[::1]` (any port);
            `*.example.com` matches every subdomain (not `example.com` itself, list it
            too); `*` matches everything (the default, which turns the check off).

    A bad or missing `Host` gets 400 `{"error": "invalid Host header"}`, or a refused
    handshake (close 1008 before accept) for WebSockets.
    """

    __slots__ = ("_allow_all", "_exact", "_suffixes", "app")

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ("*",)) -> None:
        hosts = [allowed_hosts] if isinstance(allowed_hosts, str) else list(allowed_hosts)
        self.app = app
        self._allow_all = "*" in hosts
        exact: set[str] = set()
        suffixes: list[str] = []
        for entry in hosts:
            if entry == "*":
                continue
            wildcard = entry.startswith("*.")
            split = split_host(entry[2:] if wildcard else entry)
            if split is None or split[1] is not None:
                raise ConfigurationError(
                    f"allowed_hosts entry {entry!r} is not a host name; write it like "
                    "'example.com', '*.example.com', '[::1]' or '*' (no scheme, no port)"
                )
            if wildcard:
                suffixes.append("." + split[0])
            else:
                exact.add(split[0])
        self._exact = frozenset(exact)
        self._suffixes = tuple(suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if self._allow_all or (kind != "http" and kind != "websocket"):
            await self.app(scope, receive, send)
            return
        host: bytes | None = None
        for key, value in scope.get("headers", ()):
            if key == b"host":
                host = value
                break
        if host is not None and self._is_allowed(host.decode("latin-1")):
            await self.app(scope, receive, send)
            return
        logger.info("refused %s to %s for Host %r", kind, scope.get("path"), host)
        if kind == "http":
            await send_json_error(send, 400, _INVALID)
        else:
            await WebSocketHandler(scope, receive, send).refuse(400, _INVALID)

    def _is_allowed(self, value: str) -> bool:
        split = split_host(value.strip())
        if split is None:
            return False
        name = split[0]
        return name in self._exact or (bool(self._suffixes) and name.endswith(self._suffixes))
