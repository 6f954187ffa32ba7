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
import contextvars
import email.utils
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import uvicorn
import websockets.version
from uvicorn.config import Config
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from wirehall.errors import ConfigurationError
from wirehall.types import Message
from wirehall.websocket._frames import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_frame,
    frame,
    inflate,
)
from wirehall.websocket._native import EXTENSION, NativeReader

try:  # the C version of the unmasking loop (websockets ships it for every platform it builds)
    from websockets.speedups import apply_mask as _apply_mask  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover  # a pure-Python install of websockets
    from websockets.frames import apply_mask as _apply_mask  # type: ignore[attr-defined,no-redef,unused-ignore]

__all__ = ["PROTOCOL_PATH", "WebSocketProtocol", "check_versions"]

logger = logging.getLogger("uvicorn.error")

PROTOCOL_PATH = "wirehall.server.websocket:WebSocketProtocol"
"""What `wirehall run` passes as uvicorn's `ws=`."""

TESTED_UVICORN = ("0.55", "0.55")  # major.minor, inclusive
TESTED_WEBSOCKETS = ("17.0", "17.4")

_WINDOW_BITS = 12
_HIGH_INBOX = 32  # ASGI receive queue: pause reading past this many unread messages
_CLOSE_TIMEOUT = 10.0
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

_NO_OPTIONS: dict[str, Any] = {}  # the denial extension's (empty) entry, shared by every scope

# connection states
_CONNECTING, _ACCEPTING, _OPEN, _CLOSING, _CLOSED = 0, 1, 2, 3, 4


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Server:
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


def _shared(
    config: Config, server_state: ServerState, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> _Server:
    server: _Server | None = getattr(config, "_wirehall_ws", None)
    if server is None or server.server_state is not server_state or server.loop is not loop:
        server = _Server(config, server_state, app_state, loop)
        config._wirehall_ws = server  # type: ignore[attr-defined]
    return server


def _deflate_factory() -> ServerPerMessageDeflateFactory:
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=_WINDOW_BITS,
        client_max_window_bits=_WINDOW_BITS,
        compress_settings={"memLevel": 5},
    )


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection served by uvicorn: the handshake, frames, and both faces to the app."""

    __slots__ = (
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
        "_told",
        "_waiter",
        "_writer",
        "client",
        "deflate_bits",
        "inflate_bits",
        "paused",
        "scope",
        "transport",
    )

    close_timeout = _CLOSE_TIMEOUT

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        loop = _loop or asyncio.get_event_loop()
        self._server = _shared(config, server_state, app_state, loop)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.scope: dict[str, Any] = {}
        self._state = _CONNECTING
        extensions = [_deflate_factory()] if self._server.deflate else []
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
        self._drain: asyncio.Future[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._read_paused = False
        self._told = False  # the app was told that the connection closed
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
        self._state = _CLOSED
        self._server.connections.discard(self)
        self._stop_timers()
        self._hs = None
        self._response = None
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer(False)
        if state is not _CONNECTING:
            self._tell_closed(1006, "")

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.paused = True

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
        self._state = _CLOSED
        self.transport.close()

    # the handshake -----------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        hs = self._hs
        assert hs is not None
        hs.receive_data(data)
        if hs.handshake_exc is not None:
            output = b"".join(hs.data_to_send())
            if not output:
                output = hs.reject(
                    400, "Failed to open a WebSocket connection: invalid request.\n"
                ).serialize()
            self._state = _CLOSED
            self.transport.write(output)
            self.transport.close()
            return
        for event in hs.events_received():
            if isinstance(event, Request):
                self._connect(hs, event)
                return

    def _connect(self, hs: ServerProtocol, request: Request) -> None:
        response = hs.accept(request)
        if response.status_code != 101:
            self._state = _CLOSED
            hs.send_response(response)
            self.transport.write(b"".join(hs.data_to_send()))
            self.transport.close()
            return
        self._response = response
        self._buf = bytes(hs.reader.buffer)  # anything the client sent on (it should wait for us)
        server = self._server
        headers = [
            (key.encode("ascii"), value.encode("latin-1")) for key, value in request.headers.raw_items()
        ]
        raw_path, _, query_string = request.path.partition("?")
        subprotocols: list[str] = []
        for header in request.headers.get_all("Sec-WebSocket-Protocol"):
            subprotocols.extend(token.strip() for token in header.split(","))
        transport = self.transport
        self.scope = {
            "type": "websocket",
            "asgi": {"version": server.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": self.client,
            "root_path": server.root_path,
            "path": server.root_path + unquote(raw_path),
            "raw_path": server.root_path.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query_string.encode("ascii"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": server.app_state.copy(),
            "extensions": {"websocket.http.response": _NO_OPTIONS, EXTENSION: {"socket": self}},
        }
        self._state = _ACCEPTING
        self._inbox = deque(({"type": "websocket.connect"},))
        self.start(self._run_asgi())

    def start(
        self, coro: Coroutine[Any, Any, None], context: contextvars.Context | None = None
    ) -> asyncio.Task[None]:
        """Run `coro` in a task that the server waits for when it shuts down."""
        task = self._server.loop.create_task(coro, context=context)
        tasks = self._server.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    async def _run_asgi(self) -> None:
        try:
            result = await self._server.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            if self._state is _ACCEPTING:
                self._respond(500, [], b"Internal Server Error")
        else:
            if self._state is _ACCEPTING:
                logger.error("ASGI callable returned without completing handshake.")
                self._respond(500, [], b"Internal Server Error")
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        state = self._state
        if state is _OPEN and self._reader is None:  # returned without closing: close it for the app
            self._write_close(1000, "")
            self._tell_closed(1000, "")
            self._state = _CLOSED
            self.transport.close()
        elif state is _CLOSED and not self._lost:
            self.transport.close()

    def _accept(self, message: Message) -> None:
        hs, response = self._hs, self._response
        assert hs is not None
        assert response is not None
        default_headers = self._server.default_headers
        headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in (*default_headers, *message.get("headers", ()))
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        if any(name == b"date" for name, _ in default_headers):
            del response.headers["Date"]
        response.headers.update(headers)
        hs.send_response(response)
        self.transport.write(b"".join(hs.data_to_send()))
        for extension in hs.extensions:
            if isinstance(extension, PerMessageDeflate):
                self.deflate_bits = extension.local_max_window_bits or 15
                self.inflate_bits = extension.remote_max_window_bits or 15
        self._hs = None
        self._response = None
        self._state = _OPEN
        self._log_handshake("[accepted]")
        self._schedule_ping()
        if self._buf:
            data, self._buf = self._buf, b""
            self._frames(data)

    def _log_handshake(self, outcome: str) -> None:
        # the line uvicorn's own protocols log, so that log filters and readers see no difference
        if logger.isEnabledFor(logging.INFO):
            scope: Any = self.scope
            logger.info(
                '%s - "WebSocket %s" %s', get_client_addr(scope), get_path_with_query_string(scope), outcome
            )

    def _respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Answer the handshake with an HTTP response instead of accepting it, and close."""
        if self._state is not _ACCEPTING:
            return
        self._state = _CLOSED
        response_headers = Headers(headers)
        response_headers.setdefault("Date", email.utils.formatdate(usegmt=True))
        response_headers.setdefault("Connection", "close")
        response_headers.setdefault("Content-Length", str(len(body)))
        response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        self.transport.write(Response(status, phrase, response_headers, body).serialize())
        self.transport.close()
        self._hs = None
        self._response = None

    # the ASGI face -----------------------------------------------------------------------

    async def receive(self) -> Message:
        """ASGI `receive`: the next event for an app that did not set a reader."""
        inbox = self._inbox
        if inbox is None:
            raise RuntimeError(
                "receive() on a connection whose messages go to a reader (set_reader): "
                "a controller on the native path gets them in on_message"
            )
        while not inbox:
            waiter = self._waiter = self._server.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        message = inbox.popleft()
        if self._read_paused and not inbox:
            self.resume_reading()
        return message

    def _to_inbox(self, message: Message) -> None:
        inbox = self._inbox
        if inbox is None:
            return
        inbox.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(inbox) >= _HIGH_INBOX and not self._read_paused:
            self.pause_reading()

    async def send(self, message: Message) -> None:
        """ASGI `send`."""
        kind = message["type"]
        state = self._state
        if state is _OPEN:
            if kind == "websocket.send":
                if self.paused:
                    await self._writable()
                    if self._state is not _OPEN:
                        raise ClientDisconnected
                text = message.get("text")
                if text is not None:
                    self.transport.write(frame(OP_TEXT, text.encode()))
                else:
                    self.transport.write(frame(OP_BINARY, message.get("bytes") or b""))
            elif kind == "websocket.close":
                if self.paused:
                    await self._writable()
                    if self._state is not _OPEN:
                        raise ClientDisconnected
                self.send_close(int(message.get("code", 1000)), message.get("reason") or "")
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'."
                )
        elif state is _ACCEPTING:
            self._handshake_reply(message)
        elif self._lost or self._peer_closed:
            raise ClientDisconnected
        elif kind == "websocket.close":
            return  # closing already
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}', after sending 'websocket.close'.")

    def _handshake_reply(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._log_handshake("403")
            self._respond(403, [], b"")
            self._tell_closed(1006, "")
        elif kind == "websocket.http.response.start":
            status = message["status"]
            if not 100 <= status < 600:
                raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
            self._log_handshake(str(status))
            headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            self._response = Response(status, "", Headers(headers), b"")
        elif kind == "websocket.http.response.body" and self._response is not None:
            response = self._response
            body = response.body + message.get("body", b"")
            if message.get("more_body", False):
                self._response = Response(response.status_code, "", response.headers, body)
                return
            self._respond(response.status_code, list(response.headers.raw_items()), body)
            self._tell_closed(1006, "")
        else:
            raise RuntimeError(
                "Expected ASGI message 'websocket.accept', 'websocket.close' "
                f"or 'websocket.http.response.start' but got '{kind}'."
            )

    async def _writable(self) -> None:
        drain = self._drain
        if drain is None:
            drain = self._drain = self._server.loop.create_future()
        await drain

    # the native face (wirehall.websocket._native.NativeSocket) ---------------------------

    def write(self, data: bytes) -> None:
        """Write a ready frame (ignored once closing or closed)."""
        if self._state is _OPEN:
            self.transport.write(data)

    def send_close(self, code: int, reason: str) -> None:
        """Start the closing handshake with `code`; the app is told at once (as ASGI does)."""
        if self._state is not _OPEN:
            return
        self._write_close(code, reason)
        self._state = _CLOSING
        self._close_timer = self._server.loop.call_later(self.close_timeout, self._close_expired)
        if self._read_paused:  # read on, to see the peer's answer
            self.resume_reading()
        self._tell_closed(code, reason)

    def set_writer(self, writable: Callable[[bool], None] | None) -> None:
        """`writable(True)` on resume, `writable(False)` when the connection is gone."""
        self._writer = writable
        if writable is not None and self._lost:
            writable(False)

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
        if self._told:
            return
        self._told = True
        reader = self._reader
        if reader is not None:
            reader.closed(code, reason)
        else:
            self._to_inbox({"type": "websocket.disconnect", "code": code, "reason": reason})

    # frames ---------------------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        """Parse and handle every whole frame in `data`; keep the rest for the next read."""
        pos = 0
        end = len(data)
        try:
            while end - pos >= 2:
                first = data[pos]
                second = data[pos + 1]
                length = second & 0x7F
                head = 2
                if length == 126:
                    if end - pos < 4:
                        break
                    length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                    head = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                    head = 10
                self._check_header(first, second, length)
                start = pos + head + 4
                if end - start < length:
                    break
                payload = _apply_mask(data[start : start + length], data[pos + head : start])
                pos = start + length
                self._frame(first, payload)
                if self._state is not _OPEN and self._state is not _CLOSING:
                    return
        except _ProtocolError as error:
            self._fail(error.code, error.reason)
            return
        self._buf = data[pos:] if pos < end else b""

    def _check_header(self, first: int, second: int, length: int) -> None:
        if not second & 0x80:
            raise _ProtocolError(1002, "incorrect masking")
        opcode = first & 0x0F
        if opcode >= 0x8:
            if opcode > OP_PONG:
                raise _ProtocolError(1002, f"invalid opcode: {opcode}")
            if not first & 0x80:
                raise _ProtocolError(1002, "fragmented control frame")
            if length > 125:
                raise _ProtocolError(1002, "control frame too long")
            if first & 0x70:
                raise _ProtocolError(1002, "reserved bits must be 0")
            return
        if opcode > OP_BINARY:
            raise _ProtocolError(1002, f"invalid opcode: {opcode}")
        rsv = first & 0x70
        if rsv and (rsv != 0x40 or not self.inflate_bits or opcode == OP_CONT):
            raise _ProtocolError(1002, "reserved bits must be 0")
        if self._frag_size + length > self._server.max_size:
            raise _ProtocolError(1009, f"message over {self._server.max_size} bytes")

    def _frame(self, first: int, payload: bytes) -> None:
        opcode = first & 0x0F
        fin = first & 0x80
        if opcode in (OP_TEXT, OP_BINARY):
            if self._frag is not None:
                raise _ProtocolError(1002, "expected a continuation frame")
            if fin:
                self._message(opcode, payload, bool(first & 0x40))
                return
            self._frag = [payload]
            self._frag_op = opcode
            self._frag_rsv1 = bool(first & 0x40)
            self._frag_size = len(payload)
        elif opcode == OP_CONT:
            parts = self._frag
            if parts is None:
                raise _ProtocolError(1002, "unexpected continuation frame")
            parts.append(payload)
            self._frag_size += len(payload)
            if fin:
                self._frag = None
                self._frag_size = 0
                self._message(self._frag_op, b"".join(parts), self._frag_rsv1)
        elif opcode == OP_PING:
            if self._state is _OPEN:
                self.transport.write(frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            if self._ping_payload is not None and payload == self._ping_payload:
                self._ping_payload = None
                self._schedule_ping()
        else:
            self._close_received(payload)

    def _message(self, opcode: int, payload: bytes, compressed: bool) -> None:
        if compressed:
            try:
                inflated = inflate(payload, self.inflate_bits, self._server.max_size)
            except Exception as exc:  # zlib.error and friends: not deflate data
                raise _ProtocolError(1007, "invalid compressed data") from exc
            if inflated is None:
                raise _ProtocolError(1009, f"message over {self._server.max_size} bytes")
            payload = inflated
        if self._state is not _OPEN:
            return  # closing: messages are dropped until the peer's close
        if opcode == OP_TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                raise _ProtocolError(1007, "invalid UTF-8 in a text message") from None
            reader = self._reader
            if reader is not None:
                reader.message(text)
            else:
                self._to_inbox({"type": "websocket.receive", "text": text})
        else:
            reader = self._reader
            if reader is not None:
                reader.message(payload)
            else:
                self._to_inbox({"type": "websocket.receive", "bytes": payload})

    def _close_received(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise _ProtocolError(1002, "close frame too short")
        code: int | None = None
        reason = ""
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if code not in _VALID_CLOSE and not 3000 <= code <= 4999:
                raise _ProtocolError(1002, f"invalid close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _ProtocolError(1007, "invalid UTF-8 in the close reason") from None
        self._peer_closed = True
        if self._state is _CLOSING:  # the answer to our close: the handshake is complete
            self._state = _CLOSED
            self._stop_timers()
            self.transport.close()
            return
        self._state = _CLOSED
        self._stop_timers()
        self.transport.write(close_frame(code))
        self.transport.close()
        self._tell_closed(code if code is not None else 1005, reason)

    def _fail(self, code: int, reason: str) -> None:
        """A protocol violation: close with `code` at once."""
        logger.debug("closing %s with %d: %s", self.client, code, reason)
        if self._state is _OPEN:
            self._write_close(code, reason)
        self._state = _CLOSED
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
        self._state = _CLOSED
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
        self._state = _CLOSED
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
