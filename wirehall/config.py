"""Settings read from the environment, with embedded defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from wirehall.errors import ConfigurationError

__all__ = ["Settings"]


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={value!r} is not understood; use 1/0, true/false, yes/no or on/off")


@dataclass(frozen=True, slots=True)
class Settings:
    """What an app reads from the environment when it is not told in code.

    - `WIREHALL_BACKPLANE` (default `memory://`): `redis://HOST:PORT/DB` for several processes.
    - `WIREHALL_DEBUG` (default off): tracebacks in 500 responses.
    """

    backplane: str = "memory://"
    debug: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        return cls(
            backplane=env.get("WIREHALL_BACKPLANE", "").strip() or "memory://",
            debug=_flag(env.get("WIREHALL_DEBUG", ""), "WIREHALL_DEBUG"),
        )
