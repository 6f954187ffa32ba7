"""One in-process WebSocket connection through a server's WebSocket protocol class (the native path).

The session builds a uvicorn `Config` for the app, instantiates the protocol class the way
uvicorn does on an upgrade, and connects it to an in-memory transport: the client side is
the `websockets` library's sans-I/O `ClientProtocol`, which writes the upgrade request and
the client's frames and parses every byte the server writes (frames, the close handshake,
or the HTTP response that refuses the handshake). What the server writes becomes the same
messages the plain ASGI path hands to `WebSocketTestSession`, so its behaviour is the same.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from uvicorn.config import WS_PROTOCOLS, Config
from uvicorn.importer import import_from_string
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from wirehall.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONNECTION_ENDED",
    "DEFAULT_WEBSOCKET_ENV",
    "INVALID",
    "NATIVE_PROTOCOL",
    "NativeConnection",
    "WebSocketPath",
    "websocket_protocol",
]

NATIVE_PROTOCOL = "wirehall.server.websocket:WebSocketProtocol"
"""The protocol class `websocket="native"` names (what `wirehall run` serves WebSockets with)."""

DEFAULT_WEBSOCKET_ENV = "WIREHALL_TEST_WEBSOCKET"
"""The environment variable that picks the test client's WebSocket path when none is given."""

WebSocketPath = str | type[asyncio.Protocol]
"""`"asgi"`, `"native"`, a uvicorn `--ws` name or `module:Class`, or a protocol class."""

CONNECTION_ENDED: Message = {"type": "wirehall.testing.app_ended"}
"""Put after the last message: the app ended (ASGI path) or the server closed the connection."""

INVALID = "wirehall.testing.invalid"
"""The type of a message saying the client could not read what the server wrote (its `error`)."""

# what the server adds to a 101 answer on its own: the session reports the app's headers only
_HANDSHAKE_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "date",
        "server",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
# headers the client writes for the upgrade itself; a scope's own are kept as they are
_UPGRADE_HEADERS = frozenset({"upgrade", "connection", "sec-websocket-key", "sec-websocket-version"})


class _Client(ClientProtocol):
    """The `websockets` client, taking whichever subprotocol the server picks: the session reports it."""

    def process_subprotocol(self, headers: Headers) -> Subprotocol | None:
        values = headers.get_all("Sec-WebSocket-Protocol")
        return Subprotocol(", ".join(values)) if values else None


def websocket_protocol(choice: WebSocketPath | None) -> type[asyncio.Protocol] | None:
    """The WebSocket protocol class `choice` names, or None for the plain ASGI path.

    `None` reads the environment variable WIREHALL_TEST_WEBSOCKET (unset: the ASGI path).
    """
    if choice is None:
        choice = os.environ.get(DEFAULT_WEBSOCKET_ENV, "").strip() or "asgi"
    if isinstance(choice, type):
        return choice
    if choice == "asgi":
        return None
    target = NATIVE_PROTOCOL if choice == "native" else WS_PROTOCOLS.get(choice, choice)
    if not target or ":" not in target:
        raise ValueError(
            f"websocket={choice!r} is not a WebSocket path; use 'asgi', 'native', a uvicorn --ws "
            "name (websockets-sansio, wsproto) or a protocol class as 'module:Class'"
        )
    found = import_from_string(target)
    if not (isinstance(found, type) and issubclass(found, asyncio.Protocol)):
        raise ValueError(f"websocket={choice!r} names {found!r}, which is not an asyncio.Protocol class")
    return found


class _AppWatch:
    """The app as the server runs it: its task, the error it ended with, and the session's scope entries."""

    def __init__(self, app: ASGIApp, scope: Scope, *, denial_responses: bool) -> None:
        self.app = app
        self.given = scope
        self.denial_responses = denial_responses
        self.task: asyncio.Task[Any] | None = None
        self.error: BaseException | None = None
        self.ended = False

    def _complete(self, scope: Scope) -> None:
        """Entries of the session's scope no request bytes can carry (test extensions, state, ...)."""
        for key, value in self.given.items():
            scope.setdefault(key, value)
        extensions = scope.setdefault("extensions", {})
        for name, value in (self.given.get("extensions") or {}).items():
            extensions.setdefault(name, value)
        if not self.denial_responses:
            extensions.pop("websocket.http.response", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.task = asyncio.current_task()
        self._complete(scope)
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.ended = True


class _Transport(asyncio.Transport):
    """The server's side of an in-memory connection to `NativeConnection`."""

    def __init__(self, connection: NativeConnection, extra: dict[str, Any]) -> None:
        super().__init__(extra)
        self._connection = connection
        self._protocol: asyncio.BaseProtocol | None = None
        self._closing = False
        self._reading = True
        self._limits = (64 * 1024, 16 * 1024)
        self.paused_bytes = 0  # written while the protocol's writing is paused

    # written by the server
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return  # a closed socket drops what is written to it
        if self._connection.is_paused:
            self.paused_bytes += len(data)
        self._connection.server_wrote(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("the test transport does not half-close")

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._connection.server_closed()
        asyncio.get_running_loop().call_soon(self._connection.lost)

    def abort(self) -> None:
        self.close()

    # reading (the client's bytes towards the server)
    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._connection.schedule_delivery()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    # buffering
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 64 * 1024 if high is None else high
        self._limits = (high, high // 4 if low is None else low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._limits[1], self._limits[0]

    def get_write_buffer_size(self) -> int:
        """Nothing is buffered while the client reads; past the high-water mark once it stopped."""
        if not self._connection.is_paused:
            return 0
        return self._limits[0] + 1 + self.paused_bytes

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol


class NativeConnection:
    """The client's side: drives `protocol_class` for `app` and hands what the server says to `arrived`.

    `arrived` gets the ASGI-path messages `WebSocketTestSession` reads: `websocket.accept`,
    `websocket.http.response.start`/`.body` for a refusal, `websocket.send`,
    `websocket.close`, and `CONNECTION_ENDED` once the server closed the connection.
    """

    def __init__(
        self,
        app: ASGIApp,
        scope: Scope,
        protocol_class: type[asyncio.Protocol],
        arrived: Callable[[Message], None],
        *,
        denial_responses: bool,
    ) -> None:
        self.watch = _AppWatch(app, scope, denial_responses=denial_responses)
        self.scope = scope
        self._arrived = arrived
        self._loop = asyncio.get_running_loop()
        root_path = str(scope.get("root_path") or "")
        config = Config(
            app=self.watch,
            ws=protocol_class,
            lifespan="off",
            log_config=None,
            proxy_headers=False,
            interface="asgi3",
            root_path=root_path,
        )
        config.load()
        self.server_state = ServerState()
        self.protocol: asyncio.Protocol = protocol_class(  # type: ignore[call-arg]  # uvicorn's constructor
            config=config,
            server_state=self.server_state,
            app_state=dict(scope.get("state") or {}),
            _loop=self._loop,
        )
        self.transport = _Transport(self, self._transport_extra(scope))
        self.transport.set_protocol(self.protocol)
        subprotocols = [Subprotocol(name) for name in scope.get("subprotocols") or ()]
        self.client = _Client(parse_uri(self._uri(scope)), subprotocols=subprotocols or None, max_size=None)
        self._pending: collections.deque[bytes] = collections.deque()
        self._delivery: asyncio.Handle | None = None
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        self.is_paused = False
        self.is_lost = False
        self._closed = asyncio.Event()  # the server closed the connection
        self._eof_arrived = False

    # setting up ---------------------------------------------------------------------

    @staticmethod
    def _transport_extra(scope: Scope) -> dict[str, Any]:
        ssl = scope.get("scheme") in ("wss", "https")
        return {
            "peername": tuple(scope["client"]) if scope.get("client") else None,
            "sockname": tuple(scope["server"]) if scope.get("server") else None,
            "sslcontext": True if ssl else None,
            "socket": None,
        }

    @staticmethod
    def _uri(scope: Scope) -> str:
        server = scope.get("server") or ("testserver", 80)
        scheme = "wss" if scope.get("scheme") in ("wss", "https") else "ws"
        return f"{scheme}://{server[0]}:{server[1] or 80}/"

    def _request(self) -> Request:
        scope = self.scope
        root_path = str(scope.get("root_path") or "")
        raw_path: bytes = scope.get("raw_path") or str(scope.get("path") or "/").encode()
        if root_path and raw_path.startswith(root_path.encode()):
            raw_path = raw_path[len(root_path.encode()) :] or b"/"
        path = quote(raw_path, safe="/%!$&'()*+,;=:@-._~")
        query: bytes = scope.get("query_string") or b""
        if query:
            path += "?" + quote(query, safe="/%!$&'()*+,;=:@-._~?")
        headers = Headers()
        given = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope.get("headers") or ()
        ]
        for name, value in given:
            if name.lower() not in _UPGRADE_HEADERS:
                headers[name] = value
        headers["upgrade"] = "websocket"
        headers["connection"] = "Upgrade"
        headers["sec-websocket-key"] = self.client.key
        headers["sec-websocket-version"] = "13"
        protocols = scope.get("subprotocols") or ()
        if protocols and "sec-websocket-protocol" not in headers:
            headers["sec-websocket-protocol"] = ", ".join(protocols)
        return Request(path, headers)

    def open(self) -> None:
        """Connect and send the upgrade request (the server answers on the loop)."""
        self.protocol.connection_made(self.transport)
        self.client.send_request(self._request())
        self._flush_client()

    # the client's bytes to the server ---------------------------------------------------

    def _flush_client(self) -> None:
        for chunk in self.client.data_to_send():
            if chunk:  # b"" is the client's end of stream: it waits for the server to close
                self._pending.append(chunk)
        self.schedule_delivery()

    def schedule_delivery(self) -> None:
        if self._delivery is None and self._pending and not self.is_lost:
            self._delivery = self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        """One chunk per turn of the loop, while the server reads, as separate segments would arrive."""
        self._delivery = None
        if self.is_lost or not self.transport.is_reading() or not self._pending:
            return
        self.protocol.data_received(self._pending.popleft())
        self.schedule_delivery()

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self.client.send_text(data.encode())
        else:
            self.client.send_binary(data)
        self._flush_client()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake with `code`; one a frame cannot carry (1005, 1006) drops the connection."""
        if self.is_lost or self.client.state is State.CLOSING:
            return
        if self.client.state is not State.OPEN:  # no handshake, or a refused one
            self._loop.call_soon(self._drop)
            return
        try:
            self.client.send_close(code, reason)
        except ProtocolError:
            self._loop.call_soon(self._drop)
            return
        self._flush_client()

    def _drop(self) -> None:
        """The client vanished without a close frame."""
        if not self.is_lost:
            self.protocol.eof_received()
            self.transport.close()

    # the server's bytes to the client ---------------------------------------------------

    def server_wrote(self, data: bytes) -> None:
        self.client.receive_data(data)
        self._read_events()

    def server_closed(self) -> None:
        self._closed.set()
        if not self._eof_arrived:
            self._eof_arrived = True
            self.client.receive_eof()
            self._read_events()
            self._arrived(CONNECTION_ENDED)

    def lost(self) -> None:
        if not self.is_lost:
            self.is_lost = True
            self.protocol.connection_lost(None)

    def _read_events(self) -> None:
        for event in self.client.events_received():
            if isinstance(event, Response):
                self._handshake_answer(event)
            elif isinstance(event, Frame):
                self._frame(event)
        exc, self.client.parser_exc = self.client.parser_exc, None
        if exc is not None and not isinstance(exc, EOFError):  # an EOF: CONNECTION_ENDED says it
            self._arrived({"type": INVALID, "error": f"the server sent invalid data: {exc}"})
        self._flush_client()  # pongs and the echo of a close

    def _handshake_answer(self, response: Response) -> None:
        failure = self.client.handshake_exc
        if failure is None:
            headers = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in response.headers.raw_items()
                if name.lower() not in _HANDSHAKE_HEADERS
            ]
            self._arrived(
                {"type": "websocket.accept", "subprotocol": self.client.subprotocol, "headers": headers}
            )
            return
        if not isinstance(failure, InvalidStatus):
            self._arrived({"type": INVALID, "error": f"the server's handshake is invalid: {failure}"})
            return
        if response.status_code == 500 and self.watch.error is not None:
            return  # the app crashed before answering: CONNECTION_ENDED reports its error
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers.raw_items()
        ]
        self._arrived(
            {"type": "websocket.http.response.start", "status": response.status_code, "headers": headers}
        )
        self._arrived({"type": "websocket.http.response.body", "body": bytes(response.body or b"")})

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.CLOSE:
            if self.watch.ended and self.watch.error is not None:
                # the server closes for an app that crashed: the session raises the app's error
                self._arrived(CONNECTION_ENDED)
                return
            close = self.client.close_rcvd
            code, reason = (close.code, close.reason) if close is not None else (1005, "")
            self._arrived({"type": "websocket.close", "code": code, "reason": reason})
            return
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            self._fragment_opcode = opcode
            self._fragments = []
        elif opcode is not Opcode.CONT:
            return  # ping (answered by the client protocol) or pong
        self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return
        data = b"".join(self._fragments)
        self._fragments = []
        if self._fragment_opcode is Opcode.TEXT:
            try:
                text = data.decode()
            except UnicodeDecodeError as exc:
                self._arrived({"type": INVALID, "error": f"a text frame is not UTF-8: {exc}"})
                return
            self._arrived({"type": "websocket.send", "text": text})
        else:
            self._arrived({"type": "websocket.send", "bytes": data})

    # a client that stops reading (`buffer=N`) -------------------------------------------

    def pause_writing(self) -> None:
        if not self.is_paused and not self.is_lost:
            self.is_paused = True
            self.transport.paused_bytes = 0
            self.protocol.pause_writing()

    def resume_writing(self) -> None:
        if self.is_paused:
            self.is_paused = False
            if not self.is_lost:
                self.protocol.resume_writing()

    # ending ----------------------------------------------------------------------------

    async def finish(self, timeout: float) -> bool:
        """Wait for the server to close the connection, then for the app's work to end: the ASGI
        call and every task the server started for the connection (a native protocol runs the
        app's handlers in tasks of its own once the call returned). False if it took longer
        than `timeout` seconds: what still runs is cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), timeout)
        while True:
            running = {task for task in self._tasks() if not task.done()}
            if not running:
                return True
            _, pending = await asyncio.wait(running, timeout=max(0.0, deadline - loop.time()))
            if pending:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
                return False

    def _tasks(self) -> set[asyncio.Task[Any]]:
        tasks = set(self.server_state.tasks)
        if self.watch.task is not None:
            tasks.add(self.watch.task)
        return tasks

    def error(self) -> BaseException | None:
        """What the app raised: in its ASGI call, or in a task the server ran for it."""
        if self.watch.error is not None:
            return self.watch.error
        for task in self._tasks():
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    def shut(self) -> None:
        """Drop the connection if the server kept it open (its timers end with it)."""
        self.resume_writing()
        if not self.transport.is_closing():
            self.transport.close()
        if not self.is_lost:
            self.lost()
