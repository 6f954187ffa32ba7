"""wirehall's own WebSocket protocol for uvicorn: the native path.

`wirehall run` serves WebSockets with `WebSocketProtocol` (uvicorn's `--ws` takes a
protocol class). The handshake is the `websockets` library's sans-I/O `ServerProtocol`
(request checks, subprotocols, permessage-deflate negotiation, refusals); after it,
frames are parsed and written here, and the protocol object is all a connection holds.

To any ASGI app it is a plain ASGI WebSocket server (`receive`, `send`, the
`websocket.http.response` denial extension). A wirehall app also finds the connection
in `scope["extensions"]["wirehall.websocket"]` (`wirehall.websocket._native`) and then:

- writes frames built once per broadcast straight to the transport (`write`), queuing in
  its own outbox only while the transport is paused;
- takes incoming messages by callback (`set_reader`): once it does, the ASGI app
  returns and an idle connection has no task; a task runs only while messages wait.

Incoming frames are checked as RFC 6455 requires: masked, no reserved bits but RSV1 on a
compressed message's first frame, known opcodes, control frames final and at most 125
bytes, continuations only inside a fragmented message, UTF-8 text, valid close codes;
a violation closes with 1002 (1007 for bad UTF-8 or bad compressed data, 1009 for a
message over the size limit, counted before it is buffered). Compression: the server
accepts permessage-deflate with no context takeover on either side and a 12-bit window,
so that one compressed frame serves every member of a room and no connection keeps a
zlib context between messages (see `wirehall.websocket._frames`).

Relies on uvicorn's protocol-class interface and on `websockets`' `ServerProtocol`; both are
checked at start (`check_versions`), and `--ws websockets-sansio` is the way back.
Longer than 400 lines: one connection's whole wire protocol (handshake, frames, close,
keepalive, flow control, the ASGI face and the native one) is one object by design.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import uvicorn
import websockets.version
from uvicorn.config import Config
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.server import ServerState
from websockets.http11 import Response
from websockets.server import ServerProtocol

from wirehall.errors import ConfigurationError
from wirehall.server._ws_base import ACCEPTING as _ACCEPTING
from wirehall.server._ws_base import CLOSED as _CLOSED
from wirehall.server._ws_base import CLOSING as _CLOSING
from wirehall.server._ws_base import CONNECTING as _CONNECTING
from wirehall.server._ws_base import OPEN as _OPEN
from wirehall.server._ws_base import deflate_factory, logger, shared_settings
from wirehall.server._ws_frames import FrameReader
from wirehall.server._ws_handshake import HandshakeFace
from wirehall.types import Message
from wirehall.websocket._frames import OP_PING, close_frame, frame
from wirehall.websocket._native import NativeReader

__all__ = ["PROTOCOL_PATH", "WebSocketProtocol", "check_versions"]

PROTOCOL_PATH = "wirehall.server.websocket:WebSocketProtocol"
"""What `wirehall run` passes as uvicorn's `ws=`."""

TESTED_UVICORN = ("0.55", "0.55")  # major.minor, inclusive
TESTED_WEBSOCKETS = ("17.0", "17.4")

_CLOSE_TIMEOUT = 10.0


class WebSocketProtocol(HandshakeFace, FrameReader):
    """One WebSocket connection served by uvicorn: the handshake, frames, and both faces to the app."""

    __slots__ = ()

    close_timeout = _CLOSE_TIMEOUT

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        loop = _loop or asyncio.get_event_loop()
        self._server = shared_settings(config, server_state, app_state, loop)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.scope: dict[str, Any] = {}
        self._state = _CONNECTING
        extensions = [deflate_factory()] if self._server.deflate else []
        self._hs: ServerProtocol | None = ServerProtocol(
            extensions=extensions, max_size=self._server.max_size, logger=logger
        )
        self._response: Response | None = None
        self._buf = b""
        self._frag: list[bytes] | None = None
        self._frag_op = 0
        self._frag_rsv1 = False
        self._frag_size = 0
        self._inbox: deque[Message] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reader: NativeReader | None = None
        self._writer: Callable[[bool], None] | None = None
        self._blocked: Callable[[], None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._read_paused = False
        self.closed_with: int | None = None  # the close code the app was told
        self._lost = False
        self._peer_closed = False
        self.paused = False
        self.deflate_bits = 0
        self.inflate_bits = 0

    # asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._server.connections.add(self)  # type: ignore[arg-type]  # uvicorn lists its own classes
        self.client = get_remote_addr(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        state = self._state
        self._close_to(_CLOSED)
        self._server.connections.discard(self)
        self._stop_timers()
        self._hs = None
        self._response = None
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        self._blocked = None
        writer, self._writer = self._writer, None
        if writer is not None:
            writer(False)
        if state is not _CONNECTING:
            self._tell_closed(1006, "")

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.paused = True
        self._stop_direct()

    def resume_writing(self) -> None:
        self.paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        writer = self._writer
        if writer is not None:
            writer(True)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state is _OPEN or state is _CLOSING:
            self._frames(self._buf + data if self._buf else data)
        elif state is _CONNECTING:
            self._handshake(data)
        elif state is _ACCEPTING:
            self._buf += data  # frames sent before the handshake's answer: read once accepted

    def shutdown(self) -> None:
        """The server is stopping (uvicorn calls this on every connection)."""
        self._stop_timers()
        state = self._state
        if state is _OPEN:
            self._write_close(1012, "")
            self._tell_closed(1012, "")
        elif state is _ACCEPTING:
            self._respond(500, [], b"Internal Server Error")
            self._tell_closed(1006, "")
        self._close_to(_CLOSED)
        self.transport.close()

    # the native face (wirehall.websocket._native.NativeSocket) ---------------------------

    def write(self, data: bytes) -> None:
        """Write a ready frame (ignored once closing or closed)."""
        if self._state is _OPEN:
            self.transport.write(data)

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake with `code`; the app is told at once (as ASGI does)."""
        if self._state is not _OPEN:
            return
        self._close_to(_CLOSING)
        self._write_close(code, reason)
        self._close_timer = self._server.loop.call_later(self.close_timeout, self._close_expired)
        if self._read_paused:  # read on, to see the peer's answer
            self.resume_reading()
        self._tell_closed(code, reason)

    def set_writer(
        self, writable: Callable[[bool], None] | None, blocked: Callable[[], None] | None = None
    ) -> None:
        """`writable(True)` on resume, `writable(False)` when the connection is gone; `blocked()`
        each time direct writes must stop (see `direct_transport`)."""
        self._writer = writable
        self._blocked = blocked
        if writable is not None and self._lost:
            writable(False)

    @property
    def direct_transport(self) -> asyncio.Transport | None:
        """The transport while the app may write whole frames to it directly (open, not paused,
        the app not told of a close); None otherwise. Until `blocked()` (see `set_writer`) is
        called, it stays so: a broadcast writes to it without asking again."""
        if self._state is _OPEN and not self.paused and self.closed_with is None:
            return self.transport
        return None

    def set_reader(self, reader: NativeReader) -> None:
        """Hand messages to `reader` from now on, starting with those that wait in the inbox."""
        self._reader = reader
        inbox, self._inbox = self._inbox, None
        while inbox:
            message = inbox.popleft()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                reader.message(text if text is not None else message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                reader.closed(message.get("code", 1006), message.get("reason") or "")
        if self._read_paused:
            self.resume_reading()

    def pause_reading(self) -> None:
        if not self._read_paused and not self._lost:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and not self._lost:
            self._read_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Reset the TCP connection now (SO_LINGER 0), dropping what waits in its buffers."""
        transport = self.transport
        if transport is None or self._lost:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _tell_closed(self, code: int, reason: str) -> None:
        if self.closed_with is not None:
            return
        self.closed_with = code
        self._stop_direct()
        reader = self._reader
        if reader is not None:
            reader.closed(code, reason)
        else:
            self._to_inbox({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _fail(self, code: int, reason: str) -> None:
        """A protocol violation: close with `code` at once."""
        logger.debug("closing %s with %d: %s", self.client, code, reason)
        if self._state is _OPEN:
            self._write_close(code, reason)
        self._close_to(_CLOSED)
        self._stop_timers()
        self._buf = b""
        self._frag = None
        self.transport.close()
        self._tell_closed(code, reason)

    def _write_close(self, code: int, reason: str) -> None:
        self.transport.write(close_frame(code, reason))

    def _close_expired(self) -> None:
        self._close_timer = None
        if self._lost:
            return
        self._close_to(_CLOSED)
        if self.transport.get_write_buffer_size():
            self.abort()  # a peer that does not read would hold a graceful close forever
        else:
            self.transport.close()

    # keepalive -------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self._server.ping_interval
        if interval is not None and self._state is _OPEN:
            timer = self._ping_timer
            if timer is not None:
                timer.cancel()
            self._ping_timer = self._server.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self._state is not _OPEN:
            return
        payload = self._ping_payload = struct.pack("!I", random.getrandbits(32))
        self.transport.write(frame(OP_PING, payload))
        timeout = self._server.ping_timeout
        if timeout is not None:
            self._ping_timer = self._server.loop.call_later(timeout, self._keepalive_expired)
        else:
            self._ping_payload = None
            self._schedule_ping()

    def _keepalive_expired(self) -> None:
        self._ping_timer = None
        if self._state is not _OPEN:
            return
        logger.debug("closing %s: keepalive ping timeout", self.client)
        self._close_to(_CLOSED)
        if self.transport.get_write_buffer_size():
            self._tell_closed(1011, "keepalive ping timeout")
            self.abort()  # its buffers are full: a close frame would never reach it
            return
        self._write_close(1011, "keepalive ping timeout")
        self.transport.close()
        self._tell_closed(1011, "keepalive ping timeout")

    def _stop_timers(self) -> None:
        for timer in (self._ping_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._close_timer = None
        self._ping_payload = None


def check_versions() -> None:
    """Fail at start, clearly, if uvicorn or websockets changed under the native protocol.

    Raises:
        ConfigurationError: naming what is missing and how to serve with uvicorn's own protocol.
    """
    problems: list[str] = []
    for name, (low, high), version in (
        ("uvicorn", TESTED_UVICORN, uvicorn.__version__),
        ("websockets", TESTED_WEBSOCKETS, websockets.version.version),
    ):
        if not _version_in(version, low, high):
            problems.append(f"{name} {version} (tested: {low} to {high})")
    for label, owner, attribute in (
        ("ServerProtocol.accept", ServerProtocol, "accept"),
        ("ServerProtocol.send_response", ServerProtocol, "send_response"),
        ("ServerProtocol.reject", ServerProtocol, "reject"),
        ("ServerProtocol.data_to_send", ServerProtocol, "data_to_send"),
        ("ServerState.default_headers", ServerState(), "default_headers"),
        ("ServerState.tasks", ServerState(), "tasks"),
    ):
        if not hasattr(owner, attribute):
            problems.append(f"{label} is missing")
    if problems:
        raise ConfigurationError(
            "wirehall's native WebSocket protocol was not tested with "
            + "; ".join(problems)
            + ". Serve with uvicorn's own protocol instead: wirehall run ... --ws websockets-sansio"
        )


def _version_in(version: str, low: str, high: str) -> bool:
    def key(text: str) -> tuple[int, ...]:
        parts: list[int] = []
        for part in text.split(".")[:2]:
            digits = "".join(ch for ch in part if ch.isdigit())
            parts.append(int(digits) if digits else 0)
        return tuple(parts)

    return key(low) <= key(version) <= key(high)
