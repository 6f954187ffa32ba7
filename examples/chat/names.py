"""What the chat accepts: room and user names, message texts, `since` and `limit`.

Plain functions from a value to a checked value, so they can be tested without a socket.
Each raises `InvalidInputError` with a message written for the person who typed the value.
"""

from __future__ import annotations

import re
import unicodedata

from examples.chat.config import API_LIMIT_DEFAULT, API_LIMIT_MAX
from wirehall import QueryParams

__all__ = [
    "ROOM_MAX",
    "TEXT_MAX",
    "USER_MAX",
    "InvalidInputError",
    "check_limit",
    "check_query",
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
# Not allowed anywhere in a user name: control characters (Cc), invisible format characters
# (Cf: zero-width space and joiners, the byte-order mark, bidirectional controls, language
# tags), line and paragraph separators (Zl, Zp), private use (Co), unassigned code points
# (Cn) and lone surrogates (Cs), which cannot be stored or sent as UTF-8.
_REJECTED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"})
_REJECTED_WHY = {
    "Cc": "a control character",
    "Cf": "an invisible formatting character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Cs": "a lone surrogate (not valid Unicode)",
}
# Letters, digits, punctuation and symbols are visible, except these blank ones (Hangul
# fillers and the blank Braille pattern render as nothing). Spaces and combining marks
# alone are not visible.
_VISIBLE_CATEGORY_STARTS = ("L", "N", "P", "S")
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")


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


WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Unicode's White_Space characters: what trimming a name removes. Python's `str.strip()` also
removes U+001C-U+001F (information separators), which are control characters, refused anywhere."""


def check_user(value: str) -> str:
    """Return the trimmed user name: 1 to 32 characters, at least one of them visible.

    Control, invisible formatting (zero-width, bidirectional, BOM, tags), line and
    paragraph separator, private-use and unassigned characters are refused anywhere.
    """
    name = value.strip(WHITE_SPACE)
    if not name:
        raise InvalidInputError("user name is empty: choose a name of 1 to 32 characters")
    if len(name) > USER_MAX:
        raise InvalidInputError(f"user name is {len(name)} characters long: use at most {USER_MAX}")
    for char in name:
        category = unicodedata.category(char)
        if category in _REJECTED_CATEGORIES:
            raise InvalidInputError(
                f"user name contains {_REJECTED_WHY[category]} ({_describe(char)}): remove it"
            )
    if not any(_is_visible(char) for char in name):
        raise InvalidInputError("user name has no visible character: use letters, digits or symbols")
    return name


def check_query(raw: bytes) -> QueryParams:
    """The parameters of a raw query string; one that is not UTF-8 once decoded is refused."""
    try:
        return QueryParams.from_string(raw, strict=True)
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            "the query string is not valid UTF-8 (a user name must be UTF-8 text, percent-encoded)"
        ) from exc


def check_text(value: str) -> str:
    """Return the trimmed message text: 1 to 2000 characters, no NUL."""
    text = value.strip()
    if not text:
        raise InvalidInputError("message text is empty: type something to send")
    if len(text) > TEXT_MAX:
        raise InvalidInputError(f"message text is {len(text)} characters long: send at most {TEXT_MAX}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError("message text is not valid Unicode (a lone surrogate)") from exc
    if "\x00" in text:  # no database text type stores it everywhere (PostgreSQL refuses it)
        raise InvalidInputError("message text contains a NUL character (U+0000): remove it")
    return text


def _is_visible(char: str) -> bool:
    return unicodedata.category(char).startswith(_VISIBLE_CATEGORY_STARTS) and char not in _BLANK


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


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
