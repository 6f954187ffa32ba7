"""uvicorn's HTTP protocols with a cap on the request head and a deadline for receiving it.

uvicorn buffers a request line and headers for as long as a client keeps sending them
(httptools has no cap; neither implementation has a deadline), so one slow or endless
head holds a connection and its memory. These subclasses count the bytes of each head
and time it from the moment the server waits for it (connection open, end of the
previous response, or the first byte of a pipelined request), not from its last byte:

- a head larger than `max_size` gets 431 and the connection is closed;
- a head not complete within `timeout` is cut off: 408 if part of it came, else a
  plain close (an idle connection).

`wirehall run` passes them to uvicorn as `http=`; they read their limits from
`WIREHALL_MAX_HEAD_SIZE` and `WIREHALL_HEAD_TIMEOUT`, which it sets, so that worker
and reloader processes get the same limits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal

import h11
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from wirehall.errors import ConfigurationError

__all__ = [
    "DEFAULT_HEAD_TIMEOUT",
    "DEFAULT_MAX_HEAD_SIZE",
    "HEAD_TIMEOUT_ENV",
    "MAX_HEAD_SIZE_ENV",
    "HeadLimits",
    "LimitedH11Protocol",
    "LimitedHttpToolsProtocol",
    "check_uvicorn",
    "http_protocol",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_HEAD_SIZE = 16 * 1024
DEFAULT_HEAD_TIMEOUT = 10.0
MAX_HEAD_SIZE_ENV = "WIREHALL_MAX_HEAD_SIZE"
HEAD_TIMEOUT_ENV = "WIREHALL_HEAD_TIMEOUT"

# what the subclasses below override or call: checked at start by check_uvicorn()
_HTTPTOOLS_NEEDS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    "on_response_complete",
    "send_400_response",
)
_H11_NEEDS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "handle_events",
    "handle_websocket_upgrade",
    "on_response_complete",
    "send_400_response",
)
_TESTED_WITH = "uvicorn 0.55"


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """The largest request line + headers (bytes) and the seconds allowed to receive them."""

    max_size: int = DEFAULT_MAX_HEAD_SIZE
    timeout: float = DEFAULT_HEAD_TIMEOUT

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 1024:
            raise ConfigurationError(f"max head size {self.max_size!r}; use a whole number of bytes >= 1024")
        if not self.timeout > 0:
            raise ConfigurationError(f"head timeout {self.timeout!r}; use a number of seconds > 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HeadLimits:
        """Read `WIREHALL_MAX_HEAD_SIZE` and `WIREHALL_HEAD_TIMEOUT` (defaults: 16 KiB, 10 s)."""
        env = os.environ if environ is None else environ
        return _parse_limits(env.get(MAX_HEAD_SIZE_ENV, ""), env.get(HEAD_TIMEOUT_ENV, ""))

    def to_env(self) -> dict[str, str]:
        """The environment variables that `from_env` reads back as these limits."""
        return {MAX_HEAD_SIZE_ENV: str(self.max_size), HEAD_TIMEOUT_ENV: repr(self.timeout)}


@functools.lru_cache(maxsize=8)
def _parse_limits(size_text: str, timeout_text: str) -> HeadLimits:
    try:
        size = int(size_text) if size_text.strip() else DEFAULT_MAX_HEAD_SIZE
        timeout = float(timeout_text) if timeout_text.strip() else DEFAULT_HEAD_TIMEOUT
    except ValueError:
        raise ConfigurationError(
            f"{MAX_HEAD_SIZE_ENV}={size_text!r} / {HEAD_TIMEOUT_ENV}={timeout_text!r}: "
            "use a whole number of bytes and a number of seconds"
        ) from None
    return HeadLimits(size, timeout)


def _error_response(status: int, text: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = text.encode("ascii")
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode("ascii")]
    lines.extend(name + b": " + value + b"\r\n" for name, value in default_headers)
    lines.append(b"content-type: text/plain; charset=utf-8\r\n")
    lines.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)


class _HeadWatch:
    """One connection's wait for a request head: bytes received so far and the deadline."""

    __slots__ = ("_expired", "_loop", "_timer", "awaiting", "limits", "lingering", "received")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limits: HeadLimits, expired: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._expired = expired
        self._timer: asyncio.TimerHandle | None = None
        self.limits = limits
        self.awaiting = False
        self.lingering = False
        self.received = 0

    def start(self) -> None:
        """The server now waits for a head; the clock runs from here (no-op if it already does)."""
        if not self.awaiting:
            self.awaiting = True
            self.received = 0
            self._timer = self._loop.call_later(self.limits.timeout, self._expired)

    def finish(self) -> None:
        """The head is complete (or the connection is gone): stop the clock."""
        self.awaiting = self.lingering = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def add(self, count: int) -> None:
        if self.awaiting:
            self.received += count

    @property
    def too_large(self) -> bool:
        return self.awaiting and self.received > self.limits.max_size

    def refuse_too_large(
        self, transport: asyncio.Transport, default_headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Answer 431, then read and drop what the client is still sending for a moment before closing.

        Closing with its data unread would reset the connection, and the client would lose
        the answer; a lingering close lets it read the 431 (bounded in time and bytes).
        """
        self.finish()
        if transport.is_closing():
            return
        transport.write(_error_response(431, _too_large_text(self.limits), default_headers))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = True
        self.received = 0
        self._timer = self._loop.call_later(_LINGER_SECONDS, transport.close)

    def drop(self, count: int, transport: asyncio.Transport) -> None:
        """Data that came while lingering: thrown away; past the budget, the connection is closed."""
        self.received += count
        if self.received > _LINGER_BYTES:
            transport.close()


def _refuse(
    transport: asyncio.Transport, status: int, text: str, default_headers: list[tuple[bytes, bytes]]
) -> None:
    if not transport.is_closing():
        transport.write(_error_response(status, text, default_headers))
        transport.close()


_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024


def _too_large_text(limits: HeadLimits) -> str:
    return f"request line and headers are larger than {limits.max_size} bytes"


def _expire(
    transport: asyncio.Transport, watch: _HeadWatch, default_headers: list[tuple[bytes, bytes]]
) -> None:
    if transport.is_closing():
        return
    peer = transport.get_extra_info("peername")
    if watch.received:
        logger.debug("closing %s: request head not complete within %gs", peer, watch.limits.timeout)
        text = f"request head not received within {watch.limits.timeout:g} seconds"
        _refuse(transport, 408, text, default_headers)
    else:
        logger.debug("closing %s: no request within %gs", peer, watch.limits.timeout)
        transport.close()


class _HeadTooLargeError(Exception):
    pass


if TYPE_CHECKING:
    _ProtocolBase = asyncio.Protocol
else:
    _ProtocolBase = object


class _HeadLimited(_ProtocolBase):
    """What both head-limited protocols do per connection and per read; the subclasses add
    where a head starts and ends in their parser. Listed before uvicorn's class in the bases."""

    _head: _HeadWatch
    transport: asyncio.Transport
    server_state: ServerState
    client: tuple[str, int] | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head.start()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head.finish()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head.lingering:
            self._head.drop(len(data), self.transport)
            return
        self._head.add(len(data))
        super().data_received(data)
        if self._head.too_large:  # the head goes on past the cap: refuse before buffering more
            self._refuse_too_large()

    def _refuse_too_large(self) -> None:
        logger.debug("refusing %s: request head over %d bytes", self.client, self._head.limits.max_size)
        self._head.refuse_too_large(self.transport, self.server_state.default_headers)

    def _head_expired(self) -> None:
        _expire(self.transport, self._head, self.server_state.default_headers)


class LimitedHttpToolsProtocol(_HeadLimited, HttpToolsProtocol):
    """uvicorn's httptools protocol, with `HeadLimits` on every request head."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head = _HeadWatch(self.loop, HeadLimits.from_env(), self._head_expired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head.start()  # a pipelined request: its clock starts with its first byte

    def on_headers_complete(self) -> None:
        # exact size, for a head that arrived whole in one read (the count above saw the read)
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._head.limits.max_size:
            self._head.received = size
            raise _HeadTooLargeError  # httptools reports it; send_400_response answers 431
        self._head.finish()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            self._head.start()  # answered before the body was read: the next head starts now

    def on_response_complete(self) -> None:
        if not self.cycle.more_body and not self.pipeline:
            self._head.start()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head.too_large:
            self._refuse_too_large()
        else:
            super().send_400_response(msg)


class LimitedH11Protocol(_HeadLimited, H11Protocol):
    """uvicorn's h11 protocol, with `HeadLimits` on every request head.

    h11 caps what it buffers for an incomplete head at `max_size`; a head that arrives
    whole in one read may pass with up to that read's size (64 to 256 KiB) more.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = HeadLimits.from_env()
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_size)
        self._head = _HeadWatch(self.loop, limits, self._head_expired)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._head.finish()  # a request head was complete: its cycle started
        else:
            self._await_next_head()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._head.finish()
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_next_head()

    def send_400_response(self, msg: str) -> None:
        if self._head.too_large:
            self._refuse_too_large()
        else:
            super().send_400_response(msg)

    def _await_next_head(self) -> None:
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and self.conn.their_state is h11.IDLE
            and not self.transport.is_closing()
        ):
            self._head.start()


def http_protocol(name: Literal["auto", "httptools", "h11"] = "auto") -> type[asyncio.Protocol]:
    """The head-limited protocol class for uvicorn's `http=` (`auto` is httptools, the faster)."""
    return LimitedH11Protocol if name == "h11" else LimitedHttpToolsProtocol


def check_uvicorn() -> None:
    """Fail clearly if the installed uvicorn lacks what the head-limited protocols override.

    Raises:
        ConfigurationError: naming the missing methods and the uvicorn versions tested.
    """
    missing = [f"H11Protocol.{name}" for name in _H11_NEEDS if not callable(getattr(H11Protocol, name, None))]
    missing += [
        f"HttpToolsProtocol.{name}"
        for name in _HTTPTOOLS_NEEDS
        if not callable(getattr(HttpToolsProtocol, name, None))
    ]
    if missing:
        raise ConfigurationError(
            f"uvicorn {uvicorn.__version__} lacks {', '.join(missing)}, which wirehall's HTTP head "
            f"limits build on (tested with {_TESTED_WITH}); install a tested uvicorn: "
            "pip install 'uvicorn[standard]>=0.30,<=0.55'"
        )
