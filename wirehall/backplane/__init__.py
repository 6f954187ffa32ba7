"""Backplanes: how WebSocket services of several processes act as one."""

from __future__ import annotations

from wirehall.backplane.base import Backplane
from wirehall.backplane.memory import MemoryBackplane, MemoryHub
from wirehall.errors import ConfigurationError

__all__ = ["Backplane", "MemoryBackplane", "MemoryHub", "backplane_from_url"]


def backplane_from_url(url: str) -> Backplane:
    """The backplane a URL names: `memory://`, or `redis://HOST:PORT/DB` (`rediss://` for TLS).

    Raises:
        ConfigurationError: the URL names no known backplane.
        MissingDependencyError: `redis://` without the `redis` extra installed.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryBackplane()
    if scheme in ("redis", "rediss"):
        from wirehall.backplane.redis import RedisBackplane

        return RedisBackplane.from_url(url)
    raise ConfigurationError(
        f"WIREHALL_BACKPLANE={url!r} is not understood; use memory:// or redis://HOST:PORT/DB"
    )
