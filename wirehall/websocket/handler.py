"""`WebSocketHandler`: one WebSocket connection, the one place that speaks ASGI WebSocket.

Longer than 400 lines on purpose: it is the whole public surface of a connection (accept,
refuse, receive, send, close, each with the error that says how it was misused) and its
closing paths (from the app, from the core's verdict, from the service, from the outbox);
the decisions themselves are in `_core.py`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar, NoReturn, Protocol

import msgspec

from wirehall.connection import Connection
from wirehall.errors import WebSocketDisconnectError, WebSocketError, WebSocketStateError
from wirehall.types import Message, Receive, Scope, Send
from wirehall.websocket._core import ConnectionCore, Incoming, Outgoing, OutputLimits, Phase
from wirehall.websocket._frames import Broadcast
from wirehall.websocket._native import NativeOutbox, NativeSocket, native_socket
from wirehall.websocket._outbox import Outbox
from wirehall.websocket._server_seam import transport_aborter
from wirehall.websocket.codes import CloseCode, refusal_close_code

__all__ = ["Registry", "WebSocketHandler", "WebSocketState", "is_sendable_close_code", "send_message"]

logger = logging.getLogger(__name__)

_encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode
_JSON_HEADERS = ((b"content-type", b"application/json"),)


class Registry(Protocol):
    """What a handler needs of the `WebSocketService` that registered it (which imports us):
    to be told when the connection closed from within (slow consumer, dead socket)."""

    def unregister(self, handler: WebSocketHandler) -> None: ...


class WebSocketState(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


_CONNECTING = Phase.CONNECTING
_OPEN = Phase.OPEN
_CLOSING = Phase.CLOSING
_CLOSED = Phase.CLOSED
_PUBLIC_STATE = {
    _CONNECTING: WebSocketState.CONNECTING,
    _OPEN: WebSocketState.OPEN,
    _CLOSING: WebSocketState.CLOSED,  # closing: as far as the app is concerned, closed
    _CLOSED: WebSocketState.CLOSED,
}


def is_sendable_close_code(code: int) -> bool:
    """Whether `code` may be sent in a close frame (RFC 6455 section 7.4)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def send_message(text: str | None, data: bytes | None) -> Message:
    """The ASGI message that sends a text frame (`text` not None) or a binary one.

    Built once per broadcast and shared by every member's `send_nowait`; on the native
    server path it also keeps the frame, built once for them all.
    """
    if text is not None:
        return Broadcast(type="websocket.send", text=text)
    return Broadcast(type="websocket.send", bytes=data or b"")


def _truncate_reason(reason: str) -> str:
    # A close frame's reason must fit in 123 bytes of UTF-8.
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:123].decode(errors="ignore")


class WebSocketHandler(Connection):
    """One WebSocket connection: accept, receive, send and close, in the right order.

    Out-of-order use (sending before `accept()`, accepting twice, receiving after the
    close was reported) raises `WebSocketStateError`. The peer going away surfaces as
    `WebSocketDisconnectError(code)` from `receive()` and from later sends.

    The state and the decisions live in a `ConnectionCore` (`core`); this class carries
    them out in ASGI messages, the only place that does.
    """

    __slots__ = (
        "_aborting",
        "_closer",
        "_connected",
        "_core",
        "_id",
        "_main_task",
        "_native",
        "_outbox",
        "_receive",
        "_registry",
        "_reported",
        "_send",
    )

    close_timeout: ClassVar[float] = 5.0
    # A slow consumer's close frame waits behind everything already in its socket buffers
    # (megabytes); a client that still reads, slowly, gets this long to reach it.
    slow_consumer_close_timeout: ClassVar[float] = 30.0
    """How long a close may wait for a backed-up socket before the connection is dropped."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope)
        self._receive = receive
        self._send = send
        core = self._core = ConnectionCore()
        self._native = sock = native_socket(scope)
        self._outbox: Outbox | NativeOutbox
        if sock is not None:  # the native server path: frames straight to the transport
            self._outbox = NativeOutbox(sock, core, self._outbox_stopped)
        else:
            self._outbox = Outbox(send, core, self._outbox_stopped)
        self._id: str | None = None
        self._registry: Registry | None = None
        self._connected = False  # websocket.connect was received
        self._reported = False  # the app was told that the connection is closed
        self._aborting = False  # we cancelled the main task because the peer is stuck
        self._main_task: asyncio.Task[Any] | None = None
        self._closer: asyncio.Task[None] | None = None

    # identity and state ----------------------------------------------------------

    @property
    def id(self) -> str:
        """This connection's id: `"{node_id}.{n}"` once registered with a `WebSocketService`."""
        if self._id is None:
            self._id = uuid.uuid4().hex
        return self._id

    @property
    def core(self) -> ConnectionCore:
        """The connection's plain-logic core: its state machine and what it decides per frame."""
        return self._core

    @property
    def websocket_state(self) -> WebSocketState:
        """CONNECTING until accepted, OPEN, then CLOSED (from the moment a close starts)."""
        return _PUBLIC_STATE[self._core.state]

    @property
    def is_open(self) -> bool:
        """Whether the connection was accepted and is not closed."""
        return self._core.state is _OPEN

    @property
    def close_code(self) -> int | None:
        """The close code once closed (by either side), else None."""
        return self._core.close_code

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.scope.get("subprotocols") or ())

    @property
    def native(self) -> NativeSocket | None:
        """The server's native socket when served by wirehall's own protocol (None under plain ASGI)."""
        return self._native

    @property
    def queued(self) -> int:
        """How many outgoing messages wait for a slow socket."""
        return self._outbox.depth

    # what the service and the endpoint runner use ------------------------------------

    @property
    def registry(self) -> Registry | None:
        """The `WebSocketService` this connection is registered with, if any."""
        return self._registry

    @property
    def registered_id(self) -> str | None:
        """The id the registry gave this connection (None before: `id` would make one up)."""
        return self._id if self._registry is not None else None

    def attach(self, registry: Registry, connection_id: str, limits: OutputLimits) -> None:
        """Registered with `registry` as `connection_id`; slow consumers by `limits` (the service calls this)."""
        self._id = connection_id
        self._registry = registry
        self._core.set_limits(limits)

    def receive_from(self, receive: Receive) -> None:
        """Read this connection's messages from `receive` from now on (the native path's
        session, once it serves the connection by callback)."""
        self._receive = receive

    def run_in(self, task: asyncio.Task[Any] | None) -> None:
        """`task` serves this connection: a close from elsewhere cancels it if the peer is stuck."""
        self._main_task = task

    @property
    def cancelled_by_close(self) -> bool:
        """Whether a close from elsewhere cancelled the serving task (the peer took nothing)."""
        return self._aborting

    # handshake ------------------------------------------------------------------

    async def receive_connect(self) -> None:
        """Consume the client's `websocket.connect` (accept() does it when needed)."""
        if self._core.state is not _CONNECTING or self._connected:
            raise WebSocketStateError(
                "receive_connect() was called twice or after the handshake; "
                "the connect message is consumed once, before accept()"
            )
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.connect":
            self._connected = True
            return
        if kind == "websocket.disconnect":
            code = message.get("code", CloseCode.ABNORMAL)
            self._core.closed(code)
            self._reported = True
            raise WebSocketDisconnectError(code, message.get("reason") or "")
        raise WebSocketStateError(f"expected a websocket.connect message, got {kind!r}")

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """Accept the handshake, optionally choosing a subprotocol and adding headers."""
        if self._core.state is not _CONNECTING:
            raise WebSocketStateError(
                f"accept() was called on a connection that is already {self.websocket_state.value}; "
                "accept once, in on_connect"
            )
        if not self._connected:
            await self.receive_connect()
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers is not None:
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            message["headers"] = [
                (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs
            ]
        try:
            await self._send(message)
        except Exception as exc:  # the server refused: the client is gone
            self._core.closed(CloseCode.ABNORMAL)
            self._reported = True
            raise WebSocketDisconnectError(
                CloseCode.ABNORMAL, "the client left during the handshake"
            ) from exc
        if self._core.accept():
            self._outbox.open()

    async def refuse(
        self,
        status: int = 403,
        detail: str | None = None,
        *,
        close_code: int = CloseCode.POLICY_VIOLATION,
        readable: bool = False,
    ) -> None:
        """Refuse the handshake with HTTP `status` (a JSON `{"error": detail}` body).

        Without the server's `websocket.http.response` extension the refusal is a close
        with `close_code` before accept, which servers answer with 403.

        A browser cannot read an HTTP refusal: its page sees only a failed connection. With
        `readable=True` the handshake is accepted and at once closed with the application
        code 4000 + `status` (403 gives 4403) and `detail` as the reason, which the page can
        show; `wirehall.js` does not retry a close in 4000-4999. `on_disconnect` then runs.
        """
        # a bad status fails before anything is sent
        code = refusal_close_code(status) if readable else 0
        state = self._core.state
        if state is _OPEN:
            raise WebSocketStateError(
                "refuse() is only possible before accept(); close(code) an open connection instead"
            )
        if state is not _CONNECTING:
            return
        if not self._connected:
            try:
                await self.receive_connect()
            except WebSocketDisconnectError:
                return  # the client left already: nobody to answer
        if detail is None:
            try:
                detail = HTTPStatus(status).phrase
            except ValueError:
                detail = "refused"
        if readable:
            try:
                await self.accept()
            except WebSocketDisconnectError:
                return  # the client left during the handshake
            await self.close(code, detail)
            return
        extensions = self.scope.get("extensions") or {}
        denial = "websocket.http.response" in extensions
        self._core.start_close(CloseCode.ABNORMAL if denial else close_code)
        self._reported = True
        try:
            if denial:
                await self._send_denial(status, detail)
            else:
                await self._send(
                    {
                        "type": "websocket.close",
                        "code": int(close_code),
                        "reason": _truncate_reason(detail),
                    }
                )
        except Exception as exc:  # noqa: BLE001  # the client left meanwhile
            logger.debug("refusing %s failed, the client is gone: %r", self.id, exc)

    async def _send_denial(self, status: int, detail: str) -> None:
        body = _encode_json({"error": detail})
        await self._send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode("latin-1"))],
            }
        )
        await self._send({"type": "websocket.http.response.body", "body": body})

    # receiving ------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next message: `str` for a text frame, `bytes` for a binary one.

        Raises:
            WebSocketDisconnectError: the peer closed (or the connection was closed).
        """
        if self._core.state is not _OPEN:
            self._check_receivable()
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text: str | None = message.get("text")
            if text is not None:
                return text
            data: bytes | None = message.get("bytes")
            return data if data is not None else b""
        self._unexpected(message)

    def judge(self, message: Message) -> Incoming:
        """The core's verdict on one ASGI message from the server's `receive`.

        For the endpoint runner, which awaits the server's `receive` itself (one coroutine
        less per message than `receive()`); it hands a text frame's `text` to the core
        directly and everything else here.

        Raises:
            WebSocketDisconnectError: the message is the peer's disconnect.
        """
        if message["type"] == "websocket.receive":
            text: str | None = message.get("text")
            if text is not None:
                return self._core.receive(text)
            return self._core.receive(message.get("bytes") or b"")
        self._unexpected(message)

    def _unexpected(self, message: Message) -> NoReturn:
        kind = message["type"]
        if kind == "websocket.disconnect":
            code = message.get("code", CloseCode.NO_STATUS)
            self._core.closed(code)
            self._reported = True
            raise WebSocketDisconnectError(self._core.close_code or code, message.get("reason") or "")
        raise WebSocketStateError(f"the server sent an unexpected ASGI message {kind!r}")

    def _check_receivable(self) -> None:
        if self._core.state is _CONNECTING:
            raise WebSocketStateError(
                "receive() was called before accept(); accept the connection first (in on_connect)"
            )
        code = self._core.close_code or CloseCode.NO_STATUS
        if not self._reported:
            self._reported = True
            raise WebSocketDisconnectError(code, "the connection was closed")
        raise WebSocketStateError(
            f"receive() was called after the connection closed (code {code}); "
            "stop receiving once WebSocketDisconnectError is raised"
        )

    async def receive_text(self) -> str:
        """The next message, which must be a text frame (a binary one raises 1003)."""
        message = await self.receive()
        if isinstance(message, str):
            return message
        raise WebSocketError(CloseCode.UNSUPPORTED_DATA, "expected a text frame, got a binary one")

    async def receive_bytes(self) -> bytes:
        """The next message, which must be a binary frame (a text one raises 1003)."""
        message = await self.receive()
        if isinstance(message, bytes):
            return message
        raise WebSocketError(CloseCode.UNSUPPORTED_DATA, "expected a binary frame, got a text one")

    async def receive_json(self) -> Any:
        """The next message decoded as JSON (invalid JSON raises `WebSocketError(1007)`)."""
        message = await self.receive()
        try:
            return _decode_json(message)
        except msgspec.DecodeError as exc:
            raise WebSocketError(CloseCode.INVALID_PAYLOAD, f"invalid JSON: {exc}") from exc

    def __aiter__(self) -> WebSocketHandler:
        return self

    async def __anext__(self) -> str | bytes:
        if self._core.state is not _OPEN and self._core.state is not _CONNECTING and self._reported:
            raise StopAsyncIteration
        try:
            return await self.receive()
        except WebSocketDisconnectError:
            raise StopAsyncIteration from None

    # sending --------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        """Send a text frame; returns once written, after anything queued before it."""
        if self._core.state is not _OPEN:
            self._check_sendable()
        await self._outbox.put({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary frame; returns once written, after anything queued before it."""
        if self._core.state is not _OPEN:
            self._check_sendable()
        await self._outbox.put({"type": "websocket.send", "bytes": data})

    async def send_json(self, data: Any) -> None:
        """Send `data` encoded as JSON (msgspec: dicts, lists, Structs, dataclasses...) in a text frame."""
        if self._core.state is not _OPEN:
            self._check_sendable()
        await self._outbox.put({"type": "websocket.send", "text": _encode_json(data).decode()})

    def send_nowait(self, message: Message) -> None:
        """Queue a ready ASGI `websocket.send` message; never waits (used by broadcasts).

        Messages for a connection not yet accepted wait until it is; a closed one drops them.
        """
        self._outbox.put_nowait(message)

    def send_text_nowait(self, text: str) -> None:
        """Queue a text frame without waiting (ordered with broadcasts; dropped once closed)."""
        self._outbox.put_nowait({"type": "websocket.send", "text": text})

    def send_json_nowait(self, data: Any) -> None:
        """Queue `data` as a JSON text frame without waiting (ordered with broadcasts)."""
        self._outbox.put_nowait({"type": "websocket.send", "text": _encode_json(data).decode()})

    def _check_sendable(self) -> None:
        if self._core.state is _CONNECTING:
            raise WebSocketStateError(
                "a message was sent before accept(); accept the connection first (in on_connect)"
            )
        raise WebSocketDisconnectError(
            self._core.close_code or CloseCode.NO_STATUS, "the connection is closed"
        )

    # closing --------------------------------------------------------------------

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close with `code` after the messages already queued; before accept, refuse (403).

        Waits at most `close_timeout` seconds for a backed-up socket. Closing twice is harmless.
        """
        if not is_sendable_close_code(code):
            raise ValueError(
                f"close code {code} cannot be sent in a close frame; use 1000-1003, 1007-1014 or 3000-4999"
            )
        state = self._core.state
        if state is _CONNECTING:
            await self.refuse(403, reason or None)
            return
        if state is not _OPEN:
            return
        self._core.start_close(code)
        await self.finish_close(reason)

    async def finish_close(self, reason: str = "") -> None:
        """Send the close frame of a close the core started (`ConnectionCore.start_close`, or a
        `Verdict.CLOSE` from `ConnectionCore.receive`), after what is queued; bounded in time."""
        self._reported = True
        code = self._core.close_code or CloseCode.NORMAL
        await self._write_close(code, reason)

    async def _write_close(self, code: int, reason: str) -> None:
        outbox = self._outbox
        outbox.close()
        message = {"type": "websocket.close", "code": int(code), "reason": _truncate_reason(reason)}
        try:
            async with asyncio.timeout(self.close_timeout):
                await outbox.put(message)
        except TimeoutError:
            logger.warning(
                "connection %s did not take its close frame within %.1fs (%d messages queued); dropped",
                self.id,
                self.close_timeout,
                outbox.depth,
            )
            self._abort_transport()
        except WebSocketDisconnectError:
            pass  # gone already
        outbox.abort()
        self._core.closed(code)

    def _close_soon(self, code: int, close_timeout: float | None = None) -> None:
        """Close from outside the connection's task without waiting (slow consumer)."""
        core = self._core
        was_open = core.state is _OPEN
        if not core.start_close(code):
            return
        self._outbox.abort()
        if self._registry is not None:
            self._registry.unregister(self)
        self._closer = asyncio.get_running_loop().create_task(
            self._finish_outside_close(code, was_open=was_open, graceful=False, close_timeout=close_timeout)
        )

    async def close_from_outside(self, code: int) -> None:
        """Close gracefully from another task than the connection's own (service shutdown, a
        room closed), bounded in time; the connection's task sees the close and ends."""
        core = self._core
        was_open = core.state is _OPEN
        if not core.start_close(code):
            return
        if self._registry is not None:
            self._registry.unregister(self)
        await self._finish_outside_close(code, was_open=was_open, graceful=True)

    async def _finish_outside_close(
        self, code: int, *, was_open: bool, graceful: bool, close_timeout: float | None = None
    ) -> None:
        # The connection's own task learns of the close from its next (or current) receive;
        # if it stays stuck there because the peer takes nothing, that task is cancelled.
        if graceful and was_open:
            await self._write_close(code, "")
            sent = True
        else:
            self._outbox.abort()
            if close_timeout is None:
                close_timeout = self.slow_consumer_close_timeout
            sent = await self._send_close_now(code, close_timeout)
            self._core.closed(code)
        task = self._main_task
        if task is None or task is asyncio.current_task() or task.done():
            return
        if sent:
            await asyncio.wait((task,), timeout=self.close_timeout)
        if not task.done() and not self._reported:
            self._aborting = True
            task.cancel()

    async def _send_close_now(self, code: int, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._send({"type": "websocket.close", "code": int(code), "reason": ""})
        except TimeoutError:
            logger.warning(
                "connection %s did not take its close frame within %.1fs; dropped", self.id, timeout
            )
            self._abort_transport()
            return False
        except Exception as exc:  # noqa: BLE001  # the socket is gone already
            logger.debug("close of %s failed, the socket is gone: %r", self.id, exc)
        return True

    def _abort_transport(self) -> None:
        abort = transport_aborter(self._send)
        if abort is None:  # the plain ASGI fallback: returning from the app closes it
            logger.debug("the server of %s offers no transport to abort; returning from the app", self.id)
            return
        try:
            abort()
        except Exception as exc:  # noqa: BLE001  # the transport is gone already
            logger.debug("aborting the transport of %s failed: %r", self.id, exc)

    # outbox callbacks -------------------------------------------------------------

    def _outbox_stopped(self, verdict: Outgoing | None, reason: str, error: BaseException | None) -> None:
        # the outbox dropped its backlog: a slow consumer (verdict), or the socket failed (None)
        core = self._core
        if verdict is None:
            # the native server knows how it closed (the peer's code may still wait unread)
            told = self._native.closed_with if self._native is not None else None
            core.closed(told or CloseCode.ABNORMAL)
            if self._registry is not None:
                self._registry.unregister(self)
            return
        if core.state is not _OPEN and core.state is not _CONNECTING:
            if verdict is Outgoing.EVICT_STALLED:  # its close frame waits behind what will never drain
                self._abort_transport()
            return
        code = int(CloseCode.TRY_AGAIN_LATER)
        if verdict is Outgoing.EVICT_FULL:
            logger.warning("closing slow consumer %s with %d (%s)", self.id, code, reason)
            self._close_soon(CloseCode.TRY_AGAIN_LATER)
        else:
            logger.warning("closing slow consumer %s with %d: %s", self.id, code, reason)
            self._close_soon(CloseCode.TRY_AGAIN_LATER, self.close_timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self._core.state.value} {self.scope.get('path', '')!r}>"
