"""`WebSocketTestSession`: one in-process WebSocket connection to an ASGI app, no network.

It runs on one of two paths, the same to the test:

- plain ASGI (the default): the app is called with in-memory `receive`/`send`, which behave
  like uvicorn's: after the app sends `websocket.close` the app's next `receive()` gives
  `websocket.disconnect` with that code, and sending to a peer that closed raises an `OSError`;
- native (`websocket="native"`): the app is served by wirehall's own WebSocket protocol class,
  as `wirehall run` serves it, over an in-memory transport, and the client is the
  `websockets` library's sans-I/O protocol: real frames and a real close handshake.
  `websocket=` also takes a uvicorn `--ws` name (`"websockets-sansio"`), `"module:Class"` or a
  protocol class; unset, the environment variable WIREHALL_TEST_WEBSOCKET decides.

With `buffer=N` the app's sends wait while N frames are unread, like a server whose client
stopped reading (for slow-consumer tests); on the native path the transport pauses the
protocol's writing then, as a socket's full buffer does.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import msgspec

from wirehall.errors import WebSocketDisconnectError, WebSocketStateError, WirehallError
from wirehall.testing._native import (
    CONNECTION_ENDED,
    INVALID,
    NativeConnection,
    WebSocketPath,
    websocket_protocol,
)
from wirehall.types import ASGIApp, Message, Scope
from wirehall.websocket.codes import CloseCode

__all__ = ["HandshakeRejectedError", "WebSocketPath", "WebSocketTestSession"]

_APP_ENDED: Message = CONNECTION_ENDED
_encode_json = msgspec.json.Encoder().encode


class HandshakeRejectedError(WirehallError):
    """The app refused the WebSocket handshake; `status` is the HTTP status the client got."""

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []
        detail = f": {body.decode('utf-8', 'replace')}" if body else ""
        super().__init__(f"the WebSocket handshake was refused with HTTP {status}{detail}")

    def json(self) -> Any:
        """The refusal's body decoded as JSON."""
        return msgspec.json.decode(self.body)


class WebSocketTestSession:
    """Drive one WebSocket connection of `app` in-process: `async with ... as ws:`.

    Every receive waits at most `timeout` seconds (or the one given) and raises
    `TimeoutError` after that. On exit the client disconnects, the app gets a bounded
    time to finish, and an exception it raised is raised here. `websocket` picks the path
    (see the module's docstring).
    """

    def __init__(
        self,
        app: ASGIApp,
        scope: Scope,
        *,
        timeout: float = 5.0,
        buffer: int | None = None,
        denial_responses: bool = True,
        websocket: WebSocketPath | None = None,
    ) -> None:
        self.app = app
        self.scope = dict(scope)
        self.scope.setdefault("type", "websocket")
        extensions = dict(self.scope.get("extensions") or {})
        if denial_responses:
            extensions.setdefault("websocket.http.response", {})
        else:
            extensions.pop("websocket.http.response", None)
        self.scope["extensions"] = extensions
        self._denial_responses = denial_responses
        self._protocol_class = websocket_protocol(websocket)
        self._native: NativeConnection | None = None
        self.timeout = timeout
        self._buffer = buffer
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._accepted = False
        self._client_closed = False
        self._server_closed = False
        self._app_ended = False
        self.close_code: int | None = None
        """The code of the close (from either side), once closed."""
        self.close_reason = ""
        self.subprotocol: str | None = None
        """The subprotocol the app accepted, if any."""
        self.headers: list[tuple[str, str]] = []
        """Extra headers the app sent with its accept."""

    # the app's side ----------------------------------------------------------------

    async def _run_app(self) -> None:
        try:
            await self.app(self.scope, self._app_receive, self._app_send)
        finally:
            self._app_ended = True
            self._from_app.put_nowait(_APP_ENDED)
            self._writable.set()

    async def _app_receive(self) -> Message:
        return await self._to_app.get()

    async def _app_send(self, message: Message) -> None:
        buffer = self._buffer
        if buffer is not None:
            while self._from_app.qsize() >= buffer and not self._client_closed:
                self._writable.clear()
                await self._writable.wait()
        if self._client_closed:
            raise OSError("the test client has closed the connection")
        if self._server_closed:
            raise RuntimeError(f"the app sent {message.get('type')!r} after websocket.close")
        kind = message.get("type")
        if kind == "websocket.close" and self._accepted:
            self._server_closed = True
            code = message.get("code", CloseCode.NORMAL)
            self._to_app.put_nowait(
                {"type": "websocket.disconnect", "code": code, "reason": message.get("reason") or ""}
            )
        elif kind == "websocket.accept":
            self._accepted = True
        self._from_app.put_nowait(message)

    @property
    def is_native(self) -> bool:
        """True when a server's WebSocket protocol serves the app (not the plain ASGI calls)."""
        return self._protocol_class is not None

    def _arrived(self, message: Message) -> None:
        """What the server wrote, read back by the native client (the ASGI path's `_app_send`)."""
        kind = message["type"]
        if kind == "websocket.close":
            self._server_closed = True
        elif message is _APP_ENDED:
            self._app_ended = True
        self._from_app.put_nowait(message)
        if self._native is not None and self._buffer is not None and self._from_app.qsize() >= self._buffer:
            self._native.pause_writing()

    # handshake --------------------------------------------------------------------

    async def __aenter__(self) -> WebSocketTestSession:
        if self._protocol_class is not None:
            self._native = NativeConnection(
                self.app,
                self.scope,
                self._protocol_class,
                self._arrived,
                denial_responses=self._denial_responses,
            )
            self._native.open()
        else:
            self._task = asyncio.get_running_loop().create_task(self._run_app())
            self._to_app.put_nowait({"type": "websocket.connect"})
        try:
            message = await self._next(self.timeout, "the handshake's answer")
            kind = message["type"]
            if kind == "websocket.accept":
                self.subprotocol = message.get("subprotocol")
                self.headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in message.get("headers") or ()
                ]
                return self
            if kind == "websocket.close":
                raise HandshakeRejectedError(403)
            if kind == "websocket.http.response.start":
                status = int(message["status"])
                headers = [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in message.get("headers") or ()
                ]
                body = b""
                while True:
                    part = await self._next(self.timeout, "the refusal's body")
                    if part["type"] != "websocket.http.response.body":
                        break
                    body += part.get("body", b"")
                    if not part.get("more_body", False):
                        break
                raise HandshakeRejectedError(status, body, headers)
            if message is _APP_ENDED:
                await self._app_result()
                raise HandshakeRejectedError(500, b"the app ended without answering the handshake")
            raise WebSocketStateError(f"the app answered the handshake with {kind!r}")
        except BaseException:
            self._client_closed = True
            await self._finish_app(raise_errors=False)
            raise

    # the client's side --------------------------------------------------------------

    async def _next(self, timeout: float | None, what: str) -> Message:
        wait = self.timeout if timeout is None else timeout
        try:
            message = await asyncio.wait_for(self._from_app.get(), wait)
        except TimeoutError:
            raise TimeoutError(f"waited {wait}s for {what} from the app") from None
        self._writable.set()
        native = self._native
        if native is not None and native.is_paused and self._from_app.qsize() < (self._buffer or 0):
            native.resume_writing()
        if message is _APP_ENDED:
            self._from_app.put_nowait(_APP_ENDED)  # every later call sees it too
        elif message["type"] == INVALID:
            raise WebSocketStateError(message["error"])
        return message

    def _app_error(self) -> BaseException | None:
        """What the app raised, once it ended with an exception."""
        if self._native is not None:
            watch = self._native.watch
            return watch.error if watch.ended else None
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            return task.exception()
        return None

    async def _app_result(self) -> None:
        """Raise what the app raised, if it ended with an exception."""
        error = self._app_error()
        if error is not None:
            raise error

    async def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message from the app: `str` (text frame) or `bytes` (binary frame).

        Raises:
            WebSocketDisconnectError: the app closed the connection (1006 if it just ended).
            TimeoutError: nothing came within the timeout.
            Exception: whatever the app raised, when it crashed.
        """
        if self._client_closed:
            raise WebSocketStateError("receive() after close(): this test session is closed")
        message = await self._next(timeout, "a message")
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if text is not None:
                return text  # type: ignore[no-any-return]
            return message.get("bytes") or b""
        if kind == "websocket.close":
            self.close_code = message.get("code", CloseCode.NORMAL)
            self.close_reason = message.get("reason") or ""
            self._from_app.put_nowait(message)  # stays closed for later calls
            raise WebSocketDisconnectError(self.close_code or CloseCode.NORMAL, self.close_reason)
        if message is _APP_ENDED:
            await self._app_result()
            if self.close_code is None:
                self.close_code = CloseCode.ABNORMAL
            raise WebSocketDisconnectError(self.close_code, "the app ended without a close frame")
        raise WebSocketStateError(f"the app sent an unexpected message {kind!r}")

    async def receive_text(self, timeout: float | None = None) -> str:
        """The next message, which must be a text frame."""
        message = await self.receive(timeout)
        if not isinstance(message, str):
            raise TypeError(f"expected a text frame, got a binary one: {message!r}")
        return message

    async def receive_bytes(self, timeout: float | None = None) -> bytes:
        """The next message, which must be a binary frame."""
        message = await self.receive(timeout)
        if not isinstance(message, bytes):
            raise TypeError(f"expected a binary frame, got a text one: {message!r}")
        return message

    async def receive_json(self, timeout: float | None = None) -> Any:
        """The next message decoded as JSON."""
        return msgspec.json.decode(await self.receive(timeout))

    async def receive_close(self, timeout: float | None = None) -> int:
        """Wait for the app to close (skipping messages before it); returns the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                await self.receive(max(0.0, deadline - loop.time()))
            except WebSocketDisconnectError as exc:
                return exc.code

    def _check_sendable(self) -> None:
        if self._client_closed:
            raise WebSocketStateError("send after close(): this test session is closed")
        if self._server_closed or self._app_ended:
            raise WebSocketDisconnectError(
                self.close_code or CloseCode.ABNORMAL, "the app closed the connection"
            )

    async def send_text(self, text: str) -> None:
        """Send a text frame to the app."""
        self._check_sendable()
        if self._native is not None:
            self._native.send(text)
        else:
            self._to_app.put_nowait({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame to the app."""
        self._check_sendable()
        if self._native is not None:
            self._native.send(data)
        else:
            self._to_app.put_nowait({"type": "websocket.receive", "bytes": data})

    async def send_json(self, data: Any) -> None:
        """Send `data` as JSON in a text frame."""
        await self.send_text(_encode_json(data).decode())

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close from the client's side (the app receives `websocket.disconnect`)."""
        if self._client_closed:
            return
        self._client_closed = True
        self._writable.set()
        if not self._server_closed:
            if self.close_code is None:
                self.close_code = code
            if self._native is not None:
                self._native.close(code, reason)
            else:
                self._to_app.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    # ending ------------------------------------------------------------------------

    async def _finish_app(self, *, raise_errors: bool) -> None:
        native = self._native
        try:
            await self._wait_app(raise_errors=raise_errors)
        finally:
            if native is not None:
                native.shut()

    async def _wait_app(self, *, raise_errors: bool) -> None:
        if self._native is not None:
            if not await self._native.finish(self.timeout):
                if raise_errors:
                    raise TimeoutError(f"the app did not finish within {self.timeout}s of the disconnect")
                return
            error = self._native.error()
            if error is not None and raise_errors:
                raise error
            return
        task = self._task
        if task is None:
            return
        if not task.done():
            done, _ = await asyncio.wait((task,), timeout=self.timeout)
            if not done:
                task.cancel()
                await asyncio.wait((task,))
                if raise_errors:
                    raise TimeoutError(f"the app did not finish within {self.timeout}s of the disconnect")
                return
        if task.cancelled():
            return
        error = self._app_error()
        if error is not None and raise_errors:
            raise error

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
        await self._finish_app(raise_errors=exc is None)
