"""The chat's settings, read from the environment with embedded defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "API_LIMIT_DEFAULT",
    "API_LIMIT_MAX",
    "DEFAULT_DATABASE_URL",
    "RESUME_LIMIT",
    "ROOM_LIST_DEFAULT",
    "ROOM_LIST_MAX",
    "WELCOME_HISTORY",
    "ChatSettings",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///chat.db"
WELCOME_HISTORY = 50  # messages in a welcome frame without `since`
RESUME_LIMIT = 1000  # at most this many in a welcome frame with `since`
API_LIMIT_DEFAULT = 50
API_LIMIT_MAX = 500
ROOM_LIST_DEFAULT = 100  # rooms in GET /api/rooms without `limit`
ROOM_LIST_MAX = 500


@dataclass(frozen=True, slots=True)
class ChatSettings:
    """Where the chat keeps its messages.

    - `CHAT_DATABASE_URL` (default `sqlite+aiosqlite:///chat.db`, in the working directory):
      any SQLAlchemy asyncio URL.

    The WebSocket backplane is the framework's own setting, `WIREHALL_BACKPLANE`
    (default `memory://`; `redis://HOST:PORT/DB` joins several processes into one chat).
    """

    database_url: str = DEFAULT_DATABASE_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ChatSettings:
        """Read the settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        return cls(database_url=env.get("CHAT_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL)
