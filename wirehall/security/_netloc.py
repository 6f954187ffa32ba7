"""Parsing `Host` header values and `Origin`s the same way in every security check."""

from __future__ import annotations

__all__ = ["DEFAULT_PORTS", "Origin", "parse_origin", "split_host"]

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Origin = tuple[str, str, int]
"""(scheme, lower-case host, port), the port filled in from the scheme when left out."""


def split_host(value: str) -> tuple[str, int | None] | None:
    """`Example.com:8080` -> ("example.com", 8080); `[::1]` -> ("[::1]", None); None if malformed.

    A trailing dot on the name is dropped (`example.com.` is `example.com`).
    """
    if not value or not value.isascii():
        return None
    parts = _split_bracketed(value) if value[0] == "[" else _split_name(value)
    if parts is None:
        return None
    host, port_text = parts
    if port_text is None:
        return host.lower(), None
    port = _port(port_text)
    return None if port is None else (host.lower(), port)


def _split_bracketed(value: str) -> tuple[str, str | None] | None:
    """An IPv6 literal `[::1]` and the text of its port (None when there is no `:`)."""
    end = value.find("]")
    if end < 2:
        return None
    host, rest = value[: end + 1], value[end + 1 :]
    if not rest:
        return host, None
    if rest[0] != ":":
        return None
    return host, rest[1:]


def _split_name(value: str) -> tuple[str, str | None] | None:
    """A host name (its trailing dot dropped) and the text of its port (None when no `:`)."""
    host, sep, port_text = value.partition(":")
    if sep and not port_text:
        return None
    if host.endswith("."):
        host = host[:-1]
    if not host or not all(c.isalnum() or c in "-._" for c in host):
        return None
    return host, port_text if sep else None


def _port(text: str) -> int | None:
    if not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if port <= 65535 else None


def parse_origin(value: str) -> Origin | None:
    """`https://Example.com` -> ("https", "example.com", 443); None when it is not an origin.

    `null` and anything with a path, query or user info are not origins.
    """
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme.isascii() or not scheme[:1].isalpha():
        return None
    if not all(c.isalnum() or c in "+-." for c in scheme):
        return None
    scheme = scheme.lower()
    split = split_host(rest)
    if split is None:
        return None
    host, port = split
    if port is None:
        port = DEFAULT_PORTS.get(scheme, 0)
    return scheme, host, port
