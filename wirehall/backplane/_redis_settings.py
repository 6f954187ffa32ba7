"""The Redis backplane's URL: what redis-py connects to, and wirehall's own query options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from wirehall.errors import ConfigurationError

__all__ = ["DEFAULTS", "RedisSettings", "hide_password", "parse_settings"]


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """A Redis backplane's configuration, checked."""

    url: str  # what redis-py connects to: the URL without wirehall's own options
    safe_url: str  # the same with the password hidden, for messages and logs
    prefix: str
    heartbeat_ttl: float
    connect_timeout: float
    command_timeout: float
    ping_interval: float
    startup: Literal["fail", "wait"]


DEFAULTS: Final[dict[str, str]] = {
    "prefix": "wirehall",
    "heartbeat_ttl": "15",
    "connect_timeout": "3",
    "command_timeout": "3",
    "ping_interval": "5",
    "startup": "fail",
}
# redis-py options the backplane depends on: it speaks RESP2 and reads raw bytes itself.
_FIXED: Final = {
    "protocol": "RESP2",
    "decode_responses": "raw bytes",
    "client_name": "wirehall-{node}, wirehall-sub-{node}, wirehall-pub-{node}",
}
_SECONDS_OPTIONS: Final = ("heartbeat_ttl", "connect_timeout", "command_timeout", "ping_interval")


def parse_settings(url: str, overrides: dict[str, object]) -> RedisSettings:
    """Check `url` and its options; `overrides` (those not None) win over the URL's options.

    Query options that are not wirehall's stay in the URL for redis-py (e.g. ssl_cert_reqs).

    Raises:
        ConfigurationError: the URL or an option is not understood; the message says why.
    """
    shown = hide_password(url)
    parts = _split(url, shown)
    options, passthrough = _options(parts.query, shown)
    for name, override in overrides.items():
        if override is not None:
            options[name] = str(override)
    prefix = options["prefix"]
    if not prefix or any(ch.isspace() for ch in prefix):
        raise ConfigurationError(
            f"the Redis backplane prefix {prefix!r} must be non-empty and without spaces"
        )
    seconds = {name: _seconds(name, options[name]) for name in _SECONDS_OPTIONS}
    startup = options["startup"]
    if startup not in ("fail", "wait"):
        raise ConfigurationError(
            f"the Redis backplane option startup={startup!r} is not understood; use "
            "startup=fail (raise when Redis is unreachable) or startup=wait (retry until it is)"
        )
    clean = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(passthrough), parts.fragment))
    return RedisSettings(
        url=clean,
        safe_url=hide_password(clean),
        prefix=prefix,
        heartbeat_ttl=seconds["heartbeat_ttl"],
        connect_timeout=seconds["connect_timeout"],
        command_timeout=seconds["command_timeout"],
        ping_interval=seconds["ping_interval"],
        startup="wait" if startup == "wait" else "fail",
    )


def _split(url: str, shown: str) -> SplitResult:
    """`url`'s parts, checked: scheme, host, port, and a database number as the path."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ConfigurationError(
            f"the Redis URL {shown!r} is malformed ({exc}); use redis://HOST:PORT/DB"
        ) from exc
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"the Redis URL {shown!r} must start with redis:// or rediss:// (TLS)")
    if not parts.hostname:
        raise ConfigurationError(f"the Redis URL {shown!r} names no host; use redis://HOST:PORT/DB")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigurationError(
            f"the Redis URL {shown!r} has {parts.path!r} as its path; the path is the database "
            "number, e.g. redis://127.0.0.1:6379/0"
        )
    return parts


def _options(query: str, shown: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """wirehall's options (defaults filled in) and the rest of the query, left to redis-py."""
    options = dict(DEFAULTS)
    passthrough: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in seen:
            raise ConfigurationError(f"the Redis URL {shown!r} sets {name!r} twice")
        seen.add(name)
        if name in DEFAULTS:
            options[name] = value
        elif name in _FIXED:
            raise ConfigurationError(
                f"the Redis URL {shown!r} sets {name!r}, which the backplane chooses itself "
                f"({_FIXED[name]}); remove it from the URL"
            )
        else:
            passthrough.append((name, value))  # redis-py's own options, e.g. ssl_cert_reqs
    return options, passthrough


def _seconds(name: str, raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        number = float("nan")
    if not 0 < number < float("inf"):
        raise ConfigurationError(
            f"the Redis backplane option {name}={raw!r} must be a number of seconds above 0"
        )
    return number


def hide_password(url: str) -> str:
    """`url` with its password replaced by `***`, fit for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = quote(parts.username or "", safe="")
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable Redis URL>"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
