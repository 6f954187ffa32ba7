"""What the chat accepts: room and user names, message texts, `since` and `limit`.

Plain functions from a value to a checked value, so they can be tested without a socket.
Each raises `InvalidInputError` with a message written for the person who typed the value.
"""

from __future__ import annotations

import re
import unicodedata

from examples.chat.config import API_LIMIT_DEFAULT, API_LIMIT_MAX

__all__ = [
    "ROOM_MAX",
    "TEXT_MAX",
    "USER_MAX",
    "InvalidInputError",
    "check_limit",
    "check_room",
    "check_since",
    "check_text",
    "check_user",
]

ROOM_MAX = 64
USER_MAX = 32
TEXT_MAX = 2000
_DIGITS = re.compile(r"[0-9]{1,18}")  # fits a 64-bit integer column
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


def check_since(raw: str | None) -> int | None:
    """The `since` query parameter: absent, or a message id (a whole number, 0 or more)."""
    if raw is None:
        return None
    if _DIGITS.fullmatch(raw) is None:
        raise InvalidInputError(f"since={_shown(raw)} is not a message id; use a whole number, 0 or more")
    return int(raw)


def check_limit(raw: str | None) -> int:
    """The `limit` query parameter: 1 to 500, 50 when absent."""
    if raw is None:
        return API_LIMIT_DEFAULT
    if _DIGITS.fullmatch(raw) is None or not 1 <= int(raw) <= API_LIMIT_MAX:
        raise InvalidInputError(
            f"limit={_shown(raw)} is not allowed; use a whole number from 1 to {API_LIMIT_MAX}"
        )
    return int(raw)


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 24 else raw[:24] + "…")
