"""What the parts of the native WebSocket protocol share (see `wirehall.server.websocket`).

Its connection states, the settings every connection of one server shares, and
`ProtocolBase`: the attributes and the few methods that one part of the protocol
(`_ws_handshake`, `_ws_frames`, the protocol class itself) relies on in another.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Response
from websockets.server import ServerProtocol

from wirehall.types import Message
from wirehall.websocket._native import NativeReader

__all__ = [
    "ACCEPTING",
    "CLOSED",
    "CLOSING",
    "CONNECTING",
    "OPEN",
    "FrameError",
    "ProtocolBase",
    "ServerSettings",
    "deflate_factory",
    "logger",
    "shared_settings",
]

logger = logging.getLogger("uvicorn.error")

WINDOW_BITS = 12
HIGH_INBOX = 32  # ASGI receive queue: pause reading past this many unread messages
VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

# connection states
CONNECTING, ACCEPTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3, 4


class FrameError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ServerSettings:
    """What every connection of one uvicorn server shares (kept on its `Config`)."""

    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "connections",
        "default_headers",
        "deflate",
        "loop",
        "max_size",
        "ping_interval",
        "ping_timeout",
        "root_path",
        "server_state",
        "tasks",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        self.app_state = app_state
        self.asgi_version = config.asgi_version
        self.root_path = config.root_path
        self.max_size = config.ws_max_size
        self.ping_interval = config.ws_ping_interval if config.ws_ping_interval else None
        self.ping_timeout = config.ws_ping_timeout if config.ws_ping_timeout else None
        self.deflate = bool(config.ws_per_message_deflate)
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers
        self.loop = loop


def shared_settings(
    config: Config, server_state: ServerState, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> ServerSettings:
    server: ServerSettings | None = getattr(config, "_wirehall_ws", None)
    if server is None or server.server_state is not server_state or server.loop is not loop:
        server = ServerSettings(config, server_state, app_state, loop)
        config._wirehall_ws = server  # type: ignore[attr-defined]
    return server


def deflate_factory() -> ServerPerMessageDeflateFactory:
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=WINDOW_BITS,
        client_max_window_bits=WINDOW_BITS,
        compress_settings={"memLevel": 5},
    )


class ProtocolBase(asyncio.Protocol):
    """The state of one connection, as every part of the protocol sees it."""

    __slots__ = (
        "_blocked",
        "_buf",
        "_close_timer",
        "_drain",
        "_frag",
        "_frag_op",
        "_frag_rsv1",
        "_frag_size",
        "_hs",
        "_inbox",
        "_lost",
        "_peer_closed",
        "_ping_payload",
        "_ping_timer",
        "_read_paused",
        "_reader",
        "_response",
        "_server",
        "_state",
        "_waiter",
        "_writer",
        "client",
        "closed_with",
        "deflate_bits",
        "inflate_bits",
        "paused",
        "scope",
        "transport",
    )

    transport: asyncio.Transport
    client: tuple[str, int] | None
    closed_with: int | None
    scope: dict[str, Any]
    paused: bool
    deflate_bits: int
    inflate_bits: int
    _server: ServerSettings
    _state: int
    _hs: ServerProtocol | None
    _response: Response | None
    _buf: bytes
    _frag: list[bytes] | None
    _frag_op: int
    _frag_rsv1: bool
    _frag_size: int
    _inbox: deque[Message] | None
    _waiter: asyncio.Future[None] | None
    _reader: NativeReader | None
    _writer: Callable[[bool], None] | None
    _blocked: Callable[[], None] | None
    _drain: asyncio.Future[None] | None
    _ping_payload: bytes | None
    _read_paused: bool
    _lost: bool
    _peer_closed: bool

    def _stop_direct(self) -> None:
        """The app must stop writing to the transport directly: it paused, or the connection is
        closing or gone (see `WebSocketProtocol.direct_transport`)."""
        blocked = self._blocked
        if blocked is not None:
            blocked()

    def _close_to(self, state: int) -> None:
        """Enter CLOSING or CLOSED: every close goes through here, so that direct writes stop
        before a close frame can be written (nothing may follow it)."""
        self._state = state
        self._stop_direct()

    def _tell_closed(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def _frames(self, data: bytes) -> None:
        raise NotImplementedError

    def _to_inbox(self, message: Message) -> None:
        raise NotImplementedError

    def _fail(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def _write_close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def _schedule_ping(self) -> None:
        raise NotImplementedError

    def _stop_timers(self) -> None:
        raise NotImplementedError

    def send_close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError
