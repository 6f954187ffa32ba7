"""Answer only for the host names the app is meant to serve (stops Host-header and DNS-rebinding attacks)."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping

from wirehall.errors import ConfigurationError
from wirehall.security._netloc import split_host
from wirehall.security._responses import send_json_error
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket.handler import WebSocketHandler

__all__ = [
    "ALLOWED_HOSTS_ENV",
    "LOOPBACK_HOSTS",
    "HostAllowlist",
    "TrustedHostMiddleware",
    "allowed_hosts_from_env",
    "is_loopback_address",
]

logger = logging.getLogger(__name__)

_INVALID = "invalid Host header"

ALLOWED_HOSTS_ENV = "WIREHALL_ALLOWED_HOSTS"
"""Comma-separated host names an app allows when its code sets no `allowed_hosts`."""

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""The names a browser uses for this machine: what `wirehall run` allows on a loopback bind."""


class HostAllowlist:
    """A set of allowed host names: `example.com`, `*.example.com` (subdomains only), `[::1]`, `*` (any).

    Entries carry no scheme and no port; a `Host` value matches whatever its port.
    """

    __slots__ = ("_exact", "_suffixes", "allows_any")

    def __init__(self, entries: Iterable[str]) -> None:
        hosts = [entries] if isinstance(entries, str) else list(entries)
        self.allows_any = "*" in hosts
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

    def allows(self, host: str) -> bool:
        """Whether a `Host` header value (`Example.com:8000`, `[::1]`) names an allowed host."""
        if self.allows_any:
            return True
        split = split_host(host.strip())
        if split is None:
            return False
        name = split[0]
        return name in self._exact or (bool(self._suffixes) and name.endswith(self._suffixes))

    def describe(self) -> str:
        """The entries, for messages: `localhost, 127.0.0.1, *.example.com`."""
        if self.allows_any:
            return "*"
        return ", ".join([*sorted(self._exact), *("*" + suffix for suffix in self._suffixes)])


class TrustedHostMiddleware:
    """Refuse requests and WebSocket handshakes whose `Host` is not in `allowed_hosts`.

    Args:
        allowed_hosts: names like `example.com`, `127.0.0.1` or `[::1]` (any port);
            `*.example.com` matches every subdomain (not `example.com` itself, list it
            too); `*` matches everything (the default, which turns the check off).

    A bad or missing `Host` gets 400 `{"error": "invalid Host header"}`, or a refused
    handshake (400 with the server's denial extension, else close 1008 before accept,
    which servers answer with 403) for WebSockets: never a 101.
    """

    __slots__ = ("_hosts", "app")

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | HostAllowlist = ("*",)) -> None:
        self.app = app
        self._hosts = (
            allowed_hosts if isinstance(allowed_hosts, HostAllowlist) else HostAllowlist(allowed_hosts)
        )

    def allows(self, scope: Scope) -> bool:
        """Whether `scope` goes on to the app: not a request or a handshake, any host is
        allowed, or its `Host` is."""
        kind = scope["type"]
        if self._hosts.allows_any or (kind != "http" and kind != "websocket"):
            return True
        for key, value in scope.get("headers", ()):
            if key == b"host":
                return self._hosts.allows(value.decode("latin-1"))
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allows(scope):
            await self.app(scope, receive, send)
            return
        kind = scope["type"]
        host = next((value for key, value in scope.get("headers", ()) if key == b"host"), None)
        logger.info(
            "refused %s to %s for Host %r (allowed: %s; set allowed_hosts or %s to serve another name)",
            kind,
            scope.get("path"),
            host,
            self._hosts.describe(),
            ALLOWED_HOSTS_ENV,
        )
        if kind == "http":
            await send_json_error(send, 400, _INVALID)
        else:
            await WebSocketHandler(scope, receive, send).refuse(400, _INVALID)


def allowed_hosts_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The hosts listed in `WIREHALL_ALLOWED_HOSTS` (comma-separated), or None when it is unset or empty."""
    env = os.environ if environ is None else environ
    entries = tuple(part.strip() for part in env.get(ALLOWED_HOSTS_ENV, "").split(",") if part.strip())
    if not entries:
        return None
    try:
        HostAllowlist(entries)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{ALLOWED_HOSTS_ENV}={env[ALLOWED_HOSTS_ENV]!r}: {exc}") from exc
    return entries


def is_loopback_address(host: str) -> bool:
    """Whether binding `host` serves this machine only: `localhost`, 127.0.0.0/8 or ::1."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False
