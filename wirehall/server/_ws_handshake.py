"""The handshake and the ASGI face of the native WebSocket protocol (see `wirehall.server.websocket`).

The handshake is the `websockets` library's sans-I/O `ServerProtocol`; once the app
accepts, it is dropped. `receive` and `send` make the protocol a plain ASGI WebSocket
server for apps that do not take the native path (or not yet: `on_connect` runs here).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import logging
from collections import deque
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    is_ssl,
)
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from wirehall.server._ws_base import ACCEPTING as _ACCEPTING
from wirehall.server._ws_base import CLOSED as _CLOSED
from wirehall.server._ws_base import HIGH_INBOX as _HIGH_INBOX
from wirehall.server._ws_base import OPEN as _OPEN
from wirehall.server._ws_base import ProtocolBase, logger
from wirehall.types import Message
from wirehall.websocket._frames import OP_BINARY, OP_TEXT, frame
from wirehall.websocket._native import EXTENSION

__all__ = ["HandshakeFace"]

_NO_OPTIONS: dict[str, Any] = {}  # the denial extension's (empty) entry, shared by every scope


class HandshakeFace(ProtocolBase):
    """The handshake, then ASGI `receive` / `send` (a part of `WebSocketProtocol`)."""

    __slots__ = ()

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
            self._close_to(_CLOSED)
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
            self._close_to(_CLOSED)
            if request.headers.get("Sec-WebSocket-Version", "13") != "13":  # RFC 6455 4.4: say which
                response = hs.reject(426, "Unsupported Sec-WebSocket-Version: this server speaks 13.\n")
                response.headers["Sec-WebSocket-Version"] = "13"
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
        code = 1000  # an app that returns without closing: a normal close on its behalf
        try:
            result = await self._server.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:  # noqa: BLE001  # the server's boundary: logged, answered 500 / 1011
            logger.exception("Exception in ASGI application\n")
            code = 1011
            if self._state is _ACCEPTING:
                self._respond(500, [], b"Internal Server Error")
        else:
            if self._state is _ACCEPTING:
                logger.error("ASGI callable returned without completing handshake.")
                self._respond(500, [], b"Internal Server Error")
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
        state = self._state
        if state is _OPEN and self._reader is None:  # returned (or failed) without closing
            self._write_close(code, "")
            self._tell_closed(code, "")
            self._close_to(_CLOSED)
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
        self._close_to(_CLOSED)
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
