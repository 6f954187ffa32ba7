"""What the chat accepts as a room name, a user name and a message text.

Plain functions from a value to a checked value, so they can be tested without a socket.
Each raises `InvalidInputError` with a message written for the person who typed the value.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "ROOM_MAX",
    "TEXT_MAX",
    "USER_MAX",
    "InvalidInputError",
    "check_room",
    "check_text",
    "check_user",
]

ROOM_MAX = 64
USER_MAX = 32
TEXT_MAX = 2000

_ROOM = re.compile(rf"[A-Za-z0-9_-]{{1,{ROOM_MAX}}}")
# Cc: control characters. Cs: lone surrogates, which cannot be stored or sent as UTF-8.
_REJECTED_CATEGORIES = frozenset({"Cc", "Cs"})


class InvalidInputError(ValueError):
    """A room, user or text that the chat does not accept; `str()` says why."""


def check_room(value: str) -> str:
    """Return `value` if it is a room name: 1 to 64 ASCII letters, digits, `_` or `-`."""
    if _ROOM.fullmatch(value) is None:
        shown = value if len(value) <= ROOM_MAX + 8 else value[: ROOM_MAX + 8] + "…"
        raise InvalidInputError(
            f"room name {shown!r} is not valid: use 1 to {ROOM_MAX} ASCII letters, digits, '_' or '-'"
        )
    return value


def check_user(value: str) -> str:
    """Return the trimmed user name: 1 to 32 characters, no control characters."""
    name = value.strip()
    if not name:
        raise InvalidInputError("user name is empty: choose a name of 1 to 32 characters")
    if len(name) > USER_MAX:
        raise InvalidInputError(f"user name is {len(name)} characters long: use at most {USER_MAX}")
    if _has_rejected_character(name):
        raise InvalidInputError("user name contains a control character: remove it")
    return name


def check_text(value: str) -> str:
    """Return the trimmed message text: 1 to 2000 characters."""
    text = value.strip()
    if not text:
        raise InvalidInputError("message text is empty: type something to send")
    if len(text) > TEXT_MAX:
        raise InvalidInputError(f"message text is {len(text)} characters long: send at most {TEXT_MAX}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError("message text is not valid Unicode (a lone surrogate)") from exc
    return text


def _has_rejected_character(value: str) -> bool:
    return any(unicodedata.category(char) in _REJECTED_CATEGORIES for char in value)
