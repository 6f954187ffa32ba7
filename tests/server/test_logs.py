"""`wirehall run`'s log configuration and its formatters (text and JSON)."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import logging.config
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from wirehall import logcontext
from wirehall.logcontext import enter
from wirehall.server.logs import JsonFormatter, TextFormatter, log_config
from wirehall.server.redaction import QueryRedactionFilter


def record(
    name: str, msg: str, args: Any = (), level: int = logging.INFO, exc_info: Any = None
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


@pytest.fixture(autouse=True)
def _context_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # building a JsonFormatter turns the process's log context on: undo it after each test
    monkeypatch.setattr(logcontext, "_wanted", [False])


def as_json(formatter: logging.Formatter, entry: logging.LogRecord) -> dict[str, Any]:
    line = formatter.format(entry)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_json_line_has_time_level_logger_and_message() -> None:
    entry = record("myapp.orders", "order %d paid", (12,), logging.WARNING)
    entry.created = 1767225600.25  # 2026-01-01T00:00:00.250Z
    assert as_json(JsonFormatter(), entry) == {
        "time": "2026-01-01T00:00:00.250Z",
        "level": "WARNING",
        "logger": "myapp.orders",
        "message": "order 12 paid",
    }


def test_a_json_line_carries_the_request_context() -> None:
    formatter = JsonFormatter()
    scope = {"type": "http", "method": "POST", "headers": [(b"x-request-id", b"req-1")]}

    def in_request() -> dict[str, Any]:
        enter(scope, "/orders/{id:int}")
        return as_json(formatter, record("myapp", "in a request"))

    fields = contextvars.copy_context().run(in_request)
    assert fields["request_id"] == "req-1"
    assert fields["method"] == "POST"
    assert fields["route"] == "/orders/{id:int}"
    assert "connection_id" not in fields
    assert "request_id" not in as_json(formatter, record("myapp", "outside"))


def test_a_json_line_of_a_websocket_connection_names_it() -> None:
    formatter = JsonFormatter()

    def in_connection() -> dict[str, Any]:
        enter({"type": "websocket", "headers": []}, "/ws/{room}")
        logcontext.attach_connection("node.3")
        return as_json(formatter, record("myapp", "joined"))

    fields = contextvars.copy_context().run(in_connection)
    assert (fields["method"], fields["route"], fields["connection_id"]) == (
        "WEBSOCKET",
        "/ws/{room}",
        "node.3",
    )
    assert re.fullmatch("[0-9a-f]{16}", fields["request_id"])


def test_json_access_lines_have_client_method_path_and_status() -> None:
    entry = record(
        "uvicorn.access", '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5000", "GET", "/a?b=1", "1.1", 404)
    )
    fields = as_json(JsonFormatter(), entry)
    assert fields["message"] == '127.0.0.1:5000 - "GET /a?b=1 HTTP/1.1" 404'
    assert (fields["client"], fields["method"], fields["path"], fields["status"]) == (
        "127.0.0.1:5000",
        "GET",
        "/a?b=1",
        404,
    )


@pytest.mark.parametrize(
    ("msg", "args", "status"),
    [
        ('%s - "WebSocket %s" [accepted]', ("127.0.0.1:1", "/ws"), 101),
        ('%s - "WebSocket %s" 403', ("127.0.0.1:1", "/ws"), 403),
        ('%s - "WebSocket %s" %d', ("127.0.0.1:1", "/ws", 429), 429),
    ],
)
def test_json_websocket_handshake_lines_have_a_status(msg: str, args: tuple[Any, ...], status: int) -> None:
    fields = as_json(JsonFormatter(), record("uvicorn.error", msg, args))
    assert (fields["client"], fields["path"], fields["status"]) == ("127.0.0.1:1", "/ws", status)


def test_a_json_line_carries_the_exception_text() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        entry = record("myapp", "failed", level=logging.ERROR, exc_info=sys.exc_info())
    fields = as_json(JsonFormatter(), entry)
    assert fields["message"] == "failed"
    assert fields["exception"].startswith("Traceback (most recent call last):")
    assert fields["exception"].endswith("ValueError: bad value")


def test_building_a_json_formatter_turns_the_log_context_on() -> None:
    assert not logcontext.is_enabled()
    JsonFormatter()
    assert logcontext.is_enabled()


def test_text_lines_name_the_logger_except_uvicorn_s() -> None:
    formatter = TextFormatter("%(levelprefix)s %(message)s", use_colors=False)
    assert (
        formatter.format(record("myapp.orders", "order %d paid", (12,)))
        == "INFO:     myapp.orders: order 12 paid"
    )
    assert formatter.format(record("uvicorn.error", "Started server")) == "INFO:     Started server"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_config_sends_every_logger_to_the_root_at_the_level(log_format: str) -> None:
    config = log_config("debug", log_format, ["session"])  # type: ignore[arg-type]
    assert config["root"] == {"handlers": ["default"], "level": "DEBUG"}
    assert "wirehall" not in config["loggers"]  # propagates to the root
    # uvicorn's loggers keep their own handlers
    assert config["loggers"]["uvicorn.access"]["handlers"] == ["access"]
    assert config["loggers"]["uvicorn.access"]["propagate"] is False
    for handler in config["handlers"].values():
        assert handler["filters"] == ["redact_query"]
    assert config["filters"]["redact_query"]["names"] == ["session"]
    formatters = {config["formatters"][handler["formatter"]]["()"] for handler in config["handlers"].values()}
    expected = "JsonFormatter" if log_format == "json" else "TextFormatter"
    assert f"wirehall.server.logs.{expected}" in formatters


@pytest.fixture
def applied_config() -> Iterator[None]:
    """Let a test apply a log config to this process; the loggers it touched are put back after."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "myapp")
    saved = {
        name: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
        for name in names
        for logger in [logging.getLogger(name)]
    }
    yield
    for name, (level, handlers, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled


@pytest.mark.usefixtures("applied_config")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_app_logger_is_written_redacted_in_both_formats(log_format: str) -> None:
    config = log_config("info", log_format)  # type: ignore[arg-type]
    logging.config.dictConfig(config)
    root = logging.getLogger()
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    assert any(isinstance(f, QueryRedactionFilter) for f in root.handlers[0].filters)
    logging.getLogger("myapp").info("calling %s", "https://x.example/?api_key=SECRET")
    logging.getLogger("myapp").debug("below the level")
    written = stream.getvalue()
    assert "SECRET" not in written
    assert "below the level" not in written
    if log_format == "json":
        assert json.loads(written)["message"] == "calling https://x.example/?api_key=REDACTED"
    else:
        assert written.endswith("myapp: calling https://x.example/?api_key=REDACTED\n")
