"""Credential-like query parameters never reach a log line."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from uvicorn.logging import AccessFormatter

from wirehall.server.redaction import (
    DEFAULT_REDACTED_PARAMS,
    QueryRedactionFilter,
    redact_headers,
    redact_query,
)

NAMES = frozenset(DEFAULT_REDACTED_PARAMS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/ws/lobby?token=SECRET&user=ann", "/ws/lobby?token=REDACTED&user=ann"),
        ("/x?user=ann&access_token=a.b.c", "/x?user=ann&access_token=REDACTED"),
        ("/x?api_key=1&monkey=2&keyword=3", "/x?api_key=REDACTED&monkey=2&keyword=3"),
        ("/x?Password=p;client.secret=s#f", "/x?Password=REDACTED;client.secret=REDACTED#f"),
        ("/x?to%6Ben=z", "/x?to%6Ben=REDACTED"),
        ('"WebSocket /ws?refresh-token=abc" 403', '"WebSocket /ws?refresh-token=REDACTED" 403'),
        ("login with password=hunter2 failed", "login with password=REDACTED failed"),
        ("/plain/path", "/plain/path"),
        ("/x?user=token", "/x?user=token"),
    ],
)
def test_redact_query(text: str, expected: str) -> None:
    assert redact_query(text, NAMES) == expected


def record(msg: str, args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]


def test_the_filter_rewrites_arguments_and_keeps_their_shape() -> None:
    entry = record('%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5000", "GET", "/api?token=SECRET", "1.1", 200))
    assert QueryRedactionFilter().filter(entry) is True
    assert entry.args == ("127.0.0.1:5000", "GET", "/api?token=REDACTED", "1.1", 200)
    # uvicorn's access formatter unpacks the five arguments
    formatted = AccessFormatter(
        '%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    ).format(entry)
    assert formatted == '127.0.0.1:5000 - "GET /api?token=REDACTED HTTP/1.1" 200 OK'


def test_the_filter_rewrites_mapping_arguments_and_plain_messages() -> None:
    mapped = record("%(path)s", ({"path": "/a?secret=s"},))  # LogRecord keeps the mapping as args
    assert isinstance(mapped.args, dict)
    QueryRedactionFilter().filter(mapped)
    assert mapped.getMessage() == "/a?secret=REDACTED"
    plain = record("opened /ws?token=abc", ())
    QueryRedactionFilter().filter(plain)
    assert plain.getMessage() == "opened /ws?token=REDACTED"


def test_extra_names_are_redacted_and_others_kept() -> None:
    entry = record("%s", ("/x?session=abc&token=t&page=2",))
    QueryRedactionFilter(["session"]).filter(entry)
    assert entry.getMessage() == "/x?session=REDACTED&token=t&page=2"


def test_a_handler_with_the_filter_writes_no_secret() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(QueryRedactionFilter())
    logger = logging.getLogger("tests.server.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning('%s - "WebSocket %s" [accepted]', "127.0.0.1:1", "/ws?token=SECRET")
    finally:
        logger.removeHandler(handler)
    assert "SECRET" not in stream.getvalue()
    assert "token=REDACTED" in stream.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cookie: session=abc; theme=dark", "Cookie: REDACTED"),
        ("authorization:Bearer abc.def", "authorization:REDACTED"),
        ("headers:\nX-Api-Key: k1\nAccept: */*", "headers:\nX-Api-Key: REDACTED\nAccept: */*"),
        ("[(b'cookie', b'session=abc'), (b'host', b'a')]", "[(b'cookie', b'REDACTED'), (b'host', b'a')]"),
        (
            "{'Authorization': 'Basic eDp5', 'accept': '*/*'}",
            "{'Authorization': 'REDACTED', 'accept': '*/*'}",
        ),
        ("Content-Type: text/plain", "Content-Type: text/plain"),
        ("Uvicorn running on http://127.0.0.1:8000", "Uvicorn running on http://127.0.0.1:8000"),
    ],
)
def test_redact_headers(text: str, expected: str) -> None:
    assert redact_headers(text, NAMES) == expected


def test_a_header_logged_as_two_arguments_loses_its_value() -> None:
    # what the websockets library writes through uvicorn's logger at debug level
    cookie = record("< %s: %s", ("Cookie", "session=SECRET"))
    auth = record("< %s: %s", ("authorization", "Bearer SECRET"))
    token = record("< %s: %s", ("X-Auth-Token", "SECRET"))
    host = record("< %s: %s", ("Host", "localhost:8000"))
    for entry in (cookie, auth, token, host):
        QueryRedactionFilter().filter(entry)
    assert cookie.getMessage() == "< Cookie: REDACTED"
    assert auth.getMessage() == "< authorization: REDACTED"
    assert token.getMessage() == "< X-Auth-Token: REDACTED"
    assert host.getMessage() == "< Host: localhost:8000"


def test_arguments_that_are_not_text_are_redacted_as_text_and_numbers_keep_their_type() -> None:
    scope = {"path": "/ws", "query_string": b"token=SECRET", "headers": [(b"cookie", b"sid=SECRET")]}
    entry = record("scope %r, %d bytes, %.1f s", (scope, 12, 0.5))
    QueryRedactionFilter().filter(entry)
    message = entry.getMessage()
    assert "SECRET" not in message
    assert "(b'cookie', b'REDACTED')" in message
    assert message.endswith(", 12 bytes, 0.5 s")


def test_exception_text_is_redacted() -> None:
    try:
        raise RuntimeError("GET https://api.example/x?access_token=SECRET failed")
    except RuntimeError:
        entry = logging.LogRecord("myapp", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    QueryRedactionFilter().filter(entry)
    assert entry.exc_text is not None
    assert "SECRET" not in entry.exc_text
    assert entry.exc_text.endswith("RuntimeError: GET https://api.example/x?access_token=REDACTED failed")
    handler_output = logging.Formatter().format(entry)
    assert "SECRET" not in handler_output
