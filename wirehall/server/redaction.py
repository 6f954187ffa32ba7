"""Keep credentials passed in query strings (`/ws?token=...`) out of log lines.

Browsers cannot set headers on a WebSocket handshake, so tokens often travel in the
URL, and uvicorn's access log writes URLs verbatim: `"WebSocket /ws?token=SECRET" [accepted]`.
`QueryRedactionFilter`, set on the handlers of `wirehall run`'s log config, rewrites
every `name=value` pair whose name looks like a credential before the line is written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

__all__ = ["DEFAULT_REDACTED_PARAMS", "REDACTED", "QueryRedactionFilter", "redact_query"]

DEFAULT_REDACTED_PARAMS = ("access_token", "key", "password", "secret", "token")
"""Parameter names redacted by default; a name also matches as a word of a longer one
(`api_key`, `refresh-token`, `client.secret`), not as a part of one (`monkey`)."""

REDACTED = "REDACTED"

# a name=value pair starting a string or a query, or after a separator, space or quote
_PAIR = re.compile(r"(?P<lead>^|[?&;\s\"'(\[,])(?P<name>[^=&;?#\s\"']+)=(?P<value>[^&;#\s\"']*)")
_WORD = re.compile(r"[_.\-]+")


def redact_query(text: str, names: frozenset[str]) -> str:
    """`text` with the value of every `name=value` pair whose name (or one of its words) is in `names`."""
    if "=" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        name = unquote(match["name"]).lower()
        if name in names or any(word in names for word in _WORD.split(name)):
            return f"{match['lead']}{match['name']}={REDACTED}"
        return match[0]

    return _PAIR.sub(replace, text)


class QueryRedactionFilter(logging.Filter):
    """Redacts credential-like query parameters in a record's arguments (or message) in place.

    Args:
        names: parameter names to redact, matched case-insensitively, as whole names or
            as words of longer names (default: `DEFAULT_REDACTED_PARAMS`).

    The record keeps its shape (uvicorn's access formatter unpacks its arguments), and
    every record passes: the filter rewrites, it never drops.
    """

    def __init__(self, names: Iterable[str] = DEFAULT_REDACTED_PARAMS) -> None:
        super().__init__()
        self.names = frozenset(name.strip().lower() for name in names if name.strip())

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.names:
            return True
        args = record.args
        if not args:
            if isinstance(record.msg, str):  # no arguments: the message is the whole line
                record.msg = redact_query(record.msg, self.names)
        elif isinstance(args, tuple):
            if any(isinstance(arg, str) for arg in args):
                record.args = tuple(self._redact(arg) for arg in args)
        else:
            record.args = {key: self._redact(value) for key, value in args.items()}
        return True

    def _redact(self, value: Any) -> Any:
        return redact_query(value, self.names) if isinstance(value, str) else value
