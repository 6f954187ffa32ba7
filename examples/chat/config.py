"""The chat's settings, read from the environment with embedded defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from wirehall import ConfigurationError, RateLimit

__all__ = [
    "API_LIMIT_DEFAULT",
    "API_LIMIT_MAX",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_RATE_LIMIT",
    "RATE_LIMIT_BURST",
    "RESUME_LIMIT",
    "ROOM_LIST_DEFAULT",
    "ROOM_LIST_MAX",
    "WELCOME_HISTORY",
    "ChatSettings",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///chat.db"
DEFAULT_RATE_LIMIT = 10.0  # messages a second per WebSocket connection
RATE_LIMIT_BURST = 3  # bursts of up to this many seconds' worth
WELCOME_HISTORY = 50  # messages in a welcome frame without `since`
RESUME_LIMIT = 1000  # at most this many in a welcome frame with `since`
API_LIMIT_DEFAULT = 50
API_LIMIT_MAX = 500
ROOM_LIST_DEFAULT = 100  # rooms in GET /api/rooms without `limit`
ROOM_LIST_MAX = 500


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """Where the chat keeps its messages, and how much one client may do.

    - `CHAT_DATABASE_URL` (default `sqlite+aiosqlite:///chat.db`, in the working directory):
      any SQLAlchemy asyncio URL.
    - `CHAT_RATE_LIMIT` (default `10`): messages a second one WebSocket connection may
      send, with bursts of up to three times that; `0` turns the limit off.
    - `CHAT_MAX_CONNECTIONS_PER_ADDRESS` (default `0`, no cap): WebSocket connections one
      client address may hold at once; past it a handshake is refused with HTTP 429.

    The WebSocket backplane is the framework's own setting, `WIREHALL_BACKPLANE`
    (default `memory://`; `redis://HOST:PORT/DB` joins several processes into one chat).
    """

    database_url: str = DEFAULT_DATABASE_URL
    rate_limit: float = DEFAULT_RATE_LIMIT
    max_connections_per_address: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_limit) and self.rate_limit >= 0):
            raise ConfigurationError(
                f"CHAT_RATE_LIMIT={self.rate_limit!r}: use messages per second, 0 or more (0: no limit)"
            )
        if self.max_connections_per_address < 0:
            raise ConfigurationError(
                f"CHAT_MAX_CONNECTIONS_PER_ADDRESS={self.max_connections_per_address!r}: "
                "use a whole number, 0 or more (0: no cap)"
            )

    @property
    def message_rate_limit(self) -> RateLimit | None:
        """The WebSocket controller's `RateLimit` (bursts of 3 seconds' worth), None when off."""
        if self.rate_limit == 0:
            return None
        burst = max(1, math.ceil(self.rate_limit * RATE_LIMIT_BURST))
        return RateLimit(per_second=self.rate_limit, burst=burst)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ChatSettings:
        """Read the settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        rate = env.get("CHAT_RATE_LIMIT", "").strip()
        cap = env.get("CHAT_MAX_CONNECTIONS_PER_ADDRESS", "").strip()
        try:
            rate_limit = float(rate) if rate else DEFAULT_RATE_LIMIT
        except ValueError as exc:
            raise ConfigurationError(
                f"CHAT_RATE_LIMIT={rate!r} is not a number; use messages per second, like 10 (0: no limit)"
            ) from exc
        try:
            max_connections = int(cap) if cap else 0
        except ValueError as exc:
            raise ConfigurationError(
                f"CHAT_MAX_CONNECTIONS_PER_ADDRESS={cap!r} is not a whole number; use 0 or more (0: no cap)"
            ) from exc
        return cls(
            database_url=env.get("CHAT_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL,
            rate_limit=rate_limit,
            max_connections_per_address=max_connections,
        )
