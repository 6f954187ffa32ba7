"""The log configuration of `wirehall run`: every logger's lines, as text or JSON, redacted.

- The root logger gets the command's handler at `--log-level`, so an app's own
  `logging.getLogger("myapp").info(...)` is written beside the framework's lines.
  uvicorn's loggers keep their own settings (`uvicorn.access` on stdout, the rest on
  stderr; `--no-access-log` empties the access logger).
- `--log-format text` is uvicorn's line (`INFO:     message`) with the logger's name
  before the message of every logger but uvicorn's own (`INFO:     myapp: paid`).
- `--log-format json` writes one JSON object a line (`JsonFormatter`).
- Every handler carries `QueryRedactionFilter`, in both formats.

The library itself never configures logging; only the command (or the app) does.
"""

from __future__ import annotations

import copy
import logging
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import DefaultFormatter

from wirehall.logcontext import current_log_context, enable
from wirehall.server.redaction import DEFAULT_REDACTED_PARAMS

__all__ = ["LOG_FORMATS", "JsonFormatter", "LogFormat", "TextFormatter", "log_config"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

_encode = msgspec.json.Encoder().encode

# uvicorn's WebSocket handshake lines (all its WebSocket implementations), and their status
_WEBSOCKET_LINES = {
    '%s - "WebSocket %s" [accepted]': 101,
    '%s - "WebSocket %s" 403': 403,
    '%s - "WebSocket %s" %d': None,  # the status is the third argument
}


def _is_uvicorn(name: str) -> bool:
    return name == "uvicorn" or name.startswith("uvicorn.")


class TextFormatter(DefaultFormatter):
    """uvicorn's `LEVEL:    message`, with `logger: ` before the message of non-uvicorn loggers."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if not _is_uvicorn(record.name):
            record = copy.copy(record)
            record.message = f"{record.name}: {record.message}"
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for a log collector.

    Always: `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`. In a request
    or a WebSocket connection (see `wirehall.logcontext`): `request_id`, `method`, `route`
    (the path template), `connection_id` (WebSocket). On uvicorn's access lines: `client`,
    `path`, `status`; on its WebSocket handshake lines: `client`, `path`, `status` (101 for
    accepted). With an exception: `exception` (the traceback text).

    Building one turns the log context on (`wirehall.logcontext.enable()`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        enable()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = current_log_context()
        if context is not None:
            entry["request_id"] = context.request_id
            entry["method"] = context.method
            if context.route is not None:
                entry["route"] = context.route
            if context.connection_id is not None:
                entry["connection_id"] = context.connection_id
        if _is_uvicorn(record.name):
            _server_fields(record, entry)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _encode(entry).decode()


def _server_fields(record: logging.LogRecord, entry: dict[str, Any]) -> None:
    args = record.args
    if not isinstance(args, tuple):
        return
    if record.name == "uvicorn.access" and len(args) == 5:
        client, method, path, _, status = args
        entry.update(client=str(client), method=str(method), path=str(path), status=_int(status))
    elif record.msg in _WEBSOCKET_LINES and len(args) >= 2:
        status = _WEBSOCKET_LINES[str(record.msg)]
        entry.update(client=str(args[0]), path=str(args[1]))
        entry["status"] = status if status is not None else _int(args[2] if len(args) > 2 else None)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def log_config(
    level: str,
    log_format: LogFormat = "text",
    redacted_params: tuple[str, ...] | list[str] = DEFAULT_REDACTED_PARAMS,
) -> dict[str, Any]:
    """The `logging.config.dictConfig` of `wirehall run` (uvicorn applies it in each worker).

    Args:
        level: the root logger's level (`info`, `debug`...): the app's and wirehall's lines.
        log_format: "text" (uvicorn's lines) or "json" (`JsonFormatter`).
        redacted_params: query parameter names whose values every handler redacts.
    """
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    if log_format == "json":
        config["formatters"] = {"json": {"()": "wirehall.server.logs.JsonFormatter"}}
        for handler in config["handlers"].values():
            handler["formatter"] = "json"
    else:
        config["formatters"]["default"]["()"] = "wirehall.server.logs.TextFormatter"
    # on the handlers, so that it sees every record they write, propagated ones included
    config.setdefault("filters", {})["redact_query"] = {
        "()": "wirehall.server.redaction.QueryRedactionFilter",
        "names": sorted(set(redacted_params)),
    }
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_query")
    # every other logger (wirehall's, the app's, its libraries') propagates here
    config["root"] = {"handlers": ["default"], "level": level.upper()}
    return config
