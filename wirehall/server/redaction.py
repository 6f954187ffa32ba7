"""Keep credentials (query parameters, cookies, authorization headers) out of log lines.

Browsers cannot set headers on a WebSocket handshake, so tokens often travel in the
URL, and uvicorn's access log writes URLs verbatim: `"WebSocket /ws?token=SECRET" [accepted]`.
At debug level the `websockets` library writes every handshake header through uvicorn's
logger: `< Cookie: session=...`, `< Authorization: Bearer ...`.
`QueryRedactionFilter`, set on the handlers of `wirehall run`'s log config, rewrites
every `name=value` pair whose name looks like a credential, and the value of every
credential header, before the line is written, exception text included.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterable
from numbers import Number
from typing import Any
from urllib.parse import unquote

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_REDACTED_PARAMS",
    "REDACTED",
    "QueryRedactionFilter",
    "is_credential_header",
    "redact_headers",
    "redact_query",
]

DEFAULT_REDACTED_PARAMS = ("access_token", "key", "password", "secret", "session", "token")
"""Parameter names redacted by default; a name also matches as a word of a longer one
(`api_key`, `refresh-token`, `client.secret`), not as a part of one (`monkey`)."""

REDACTED = "REDACTED"

CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "set-cookie"})
"""Headers whose value is always redacted; a header named like a redacted parameter
(`X-Api-Key`, `X-Auth-Token`) is too."""

# a name=value pair starting a string or a query, or after a separator, space or quote
_PAIR = re.compile(r"(?P<lead>^|[?&;\s\"'(\[,])(?P<name>[^=&;?#\s\"']+)=(?P<value>[^&;#\s\"']*)")
_WORD = re.compile(r"[_.\-]+")
# `Name: value` to the end of the line, and ('name', 'value') / 'name': 'value' in reprs
_HEADER_LINE = re.compile(r"(?P<name>\b[A-Za-z][\w\-]*)(?P<sep>[ \t]*:[ \t]*)(?P<value>[^\r\n]+)")
_HEADER_REPR = re.compile(
    r"(?P<name>b?['\"](?P<bare>[A-Za-z][\w\-]*)['\"])(?P<sep>\s*[:,]\s*)"
    r"(?P<value>(?P<bytes>b?)(?P<quote>['\"]).*?(?<!\\)(?P=quote))"
)


def _is_credential(name: str, names: frozenset[str]) -> bool:
    name = name.lower()
    return name in names or any(word in names for word in _WORD.split(name))


def is_credential_header(name: str, names: frozenset[str]) -> bool:
    """Whether a header's value is a credential: one of `CREDENTIAL_HEADERS`, or named like one of `names`."""
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or _is_credential(lowered.removeprefix("x-"), names)


def redact_headers(text: str, names: frozenset[str]) -> str:
    """`text` with the value of every credential header (`Cookie: ...`, `('authorization', '...')`)."""

    def line(match: re.Match[str]) -> str:
        if is_credential_header(match["name"], names):
            return f"{match['name']}{match['sep']}{REDACTED}"
        return match[0]

    def quoted(match: re.Match[str]) -> str:
        if is_credential_header(match["bare"], names):
            quote = match["quote"]
            return f"{match['name']}{match['sep']}{match['bytes']}{quote}{REDACTED}{quote}"
        return match[0]

    return _HEADER_LINE.sub(line, _HEADER_REPR.sub(quoted, text))


def redact_query(text: str, names: frozenset[str]) -> str:
    """`text` with the value of every `name=value` pair whose name (or one of its words) is in `names`."""
    if "=" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if _is_credential(unquote(match["name"]), names):
            return f"{match['lead']}{match['name']}={REDACTED}"
        return match[0]

    return _PAIR.sub(replace, text)


class QueryRedactionFilter(logging.Filter):
    """Redacts credentials in a record's arguments, message and exception text, in place.

    Args:
        names: parameter names to redact, matched case-insensitively, as whole names or
            as words of longer names (default: `DEFAULT_REDACTED_PARAMS`); headers named
            like them are redacted too, besides `CREDENTIAL_HEADERS`.

    The record keeps its shape (uvicorn's access formatter unpacks its arguments; a
    `"< %s: %s"` header line keeps its two), and every record passes: the filter
    rewrites, it never drops. Arguments that are neither text nor numbers (a dict of
    headers, bytes, an object) are redacted when they are turned into text.
    """

    def __init__(self, names: Iterable[str] = DEFAULT_REDACTED_PARAMS) -> None:
        super().__init__()
        self.names = frozenset(name.strip().lower() for name in names if name.strip())
        words = sorted(self.names | CREDENTIAL_HEADERS)
        # most lines name no credential: one search tells, before the header patterns run
        self._hint = re.compile("|".join(map(re.escape, words)), re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not args:
            # no arguments: the message is the whole line
            record.msg = self._redact(record.msg)
        elif isinstance(args, tuple):
            if isinstance(record.msg, str) and ": %s" in record.msg:
                args = self._header_values(args)
            record.args = tuple(self._redact(arg) for arg in args)
        else:
            record.args = {key: self._redact(value) for key, value in args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = self.text(record.exc_text)
        return True

    def text(self, text: str) -> str:
        """`text` with every credential query parameter and header value redacted."""
        if "=" in text:
            text = redact_query(text, self.names)
        if self._hint.search(text) is not None:
            text = redact_headers(text, self.names)
        return text

    def _header_values(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        # a header written as two arguments, `("< %s: %s", name, value)`
        values = list(args)
        for index, name in enumerate(args[:-1]):
            if isinstance(name, str) and is_credential_header(name, self.names):
                values[index + 1] = REDACTED
        return tuple(values)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, Number):
            return value  # formatted with %d / %f: keep the type
        return _RedactedText(value, self.text)


class _RedactedText:
    """An argument that is redacted when it becomes text (%s, %r)."""

    __slots__ = ("redact", "value")

    def __init__(self, value: Any, redact: Callable[[str], str]) -> None:
        self.value = value
        self.redact = redact

    def __str__(self) -> str:
        return self.redact(str(self.value))

    def __repr__(self) -> str:
        return self.redact(repr(self.value))
