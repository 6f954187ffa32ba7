"""Refuse WebSocket handshakes that a page on another site opened (cross-site WebSocket hijacking).

Browsers send cookies with a WebSocket handshake whatever page opens it, and the
same-origin policy does not apply to WebSockets: the `Origin` header is the only
thing telling the server which site's script is connecting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from wirehall.errors import ConfigurationError
from wirehall.security._netloc import DEFAULT_PORTS, Origin, parse_origin, split_host
from wirehall.security.hosts import HostAllowlist
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket.handler import WebSocketHandler

__all__ = ["WebSocketOriginMiddleware", "is_same_origin"]

logger = logging.getLogger(__name__)

_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class WebSocketOriginMiddleware:
    """Refuse a WebSocket handshake whose `Origin` is neither the app's own nor allowed.

    Args:
        allowed_origins: other origins that may connect, like `https://app.example.com`
            (the port may be left out when it is the default); `https://*.example.com`
            allows every subdomain, and `*` allows every origin (turning the check off).
        allow_missing: let handshakes without an `Origin` header through. Browsers
            always send one; scripts, mobile apps and servers usually don't.
        allowed_hosts: the host names the app serves (as for `TrustedHostMiddleware`);
            when given, a `Host` outside them never makes an origin "the app's own", so a
            page on a rebinding domain (`Host: evil.com`, `Origin: http://evil.com`) is refused.

    The app's own origin is the scheme of the request (ws -> http, wss -> https) with the
    `Host` header. Behind a proxy that terminates TLS, run the server with proxy headers
    trusted (uvicorn `--forwarded-allow-ips`) or list the public origin. A refused
    handshake gets HTTP 403 (close 1008 before accept). HTTP requests pass untouched.
    """

    __slots__ = ("_allow_all", "_exact", "_hosts", "_suffixes", "allow_missing", "app")

    def __init__(
        self,
        app: ASGIApp,
        allowed_origins: Iterable[str] = (),
        *,
        allow_missing: bool = True,
        allowed_hosts: Iterable[str] | HostAllowlist | None = None,
    ) -> None:
        if isinstance(allowed_origins, str):
            allowed_origins = (allowed_origins,)
        self.app = app
        self.allow_missing = allow_missing
        if allowed_hosts is not None and not isinstance(allowed_hosts, HostAllowlist):
            allowed_hosts = HostAllowlist(allowed_hosts)
        self._hosts = None if allowed_hosts is None or allowed_hosts.allows_any else allowed_hosts
        self._allow_all = False
        self._exact: set[Origin] = set()
        self._suffixes: list[tuple[str, str, int]] = []  # (scheme, ".example.com", port)
        for entry in allowed_origins:
            if entry == "*":
                self._allow_all = True
                continue
            wildcard = "://*." in entry
            origin = parse_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
            if origin is None:
                raise ConfigurationError(
                    f"allowed_origins entry {entry!r} is not an origin; write it like "
                    "'https://example.com', 'https://*.example.com' or '*'"
                )
            if wildcard:
                self._suffixes.append((origin[0], "." + origin[1], origin[2]))
            else:
                self._exact.add(origin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or self._allow_all:
            await self.app(scope, receive, send)
            return
        origin_value: bytes | None = None
        for key, value in scope.get("headers", ()):
            if key == b"origin":
                origin_value = value
                break
        if origin_value is None:
            if self.allow_missing:
                await self.app(scope, receive, send)
                return
            logger.info("refused WebSocket handshake to %s without an Origin", scope.get("path"))
        elif self._is_allowed(origin_value.decode("latin-1"), scope):
            await self.app(scope, receive, send)
            return
        else:
            logger.info("refused WebSocket handshake to %s from origin %r", scope.get("path"), origin_value)
        await WebSocketHandler(scope, receive, send).refuse(403, "WebSocket origin not allowed")

    def allows(self, origin: str, scope: Scope) -> bool:
        """Whether a request in `scope` whose `Origin` header is `origin` passes this check.

        The same rule for HTTP requests as for handshakes (`same_site` endpoints use it).
        """
        return self._allow_all or self._is_allowed(origin, scope)

    def _is_allowed(self, value: str, scope: Scope) -> bool:
        origin = parse_origin(value.strip())
        if origin is None:
            return False
        if is_same_origin(origin, scope, self._hosts) or origin in self._exact:
            return True
        scheme, host, port = origin
        return any(scheme == s and port == p and host.endswith(suffix) for s, suffix, p in self._suffixes)


def is_same_origin(origin: Origin, scope: Scope, allowed_hosts: HostAllowlist | None = None) -> bool:
    """Whether `origin` is the origin the request in `scope` was made to (Host header).

    With `allowed_hosts`, a `Host` header outside them is not trusted: the answer is False.
    """
    scheme = _HTTP_SCHEME.get(scope.get("scheme", "http"))
    if scheme != origin[0]:
        return False
    host_value: str | None = None
    for key, value in scope.get("headers", ()):
        if key == b"host":
            host_value = value.decode("latin-1")
            break
    if host_value is not None:
        split = split_host(host_value.strip())
        if split is None or (allowed_hosts is not None and not allowed_hosts.allows(host_value)):
            return False
        host, port = split
    else:
        server = scope.get("server")
        if not server or server[0] is None:
            return False
        host, port = str(server[0]).lower(), server[1]
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
    if port is None:
        port = DEFAULT_PORTS[scheme]
    return host == origin[1] and port == origin[2]
