"""Helpers shared by the WebSocket tests: scopes and in-process sessions."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from wirehall.di import Container
from wirehall.testing.websocket import WebSocketTestSession
from wirehall.types import ASGIApp, Receive, Scope, Send
from wirehall.websocket.controller import WebSocketController, build_websocket_endpoint
from wirehall.websocket.handler import WebSocketHandler


def ws_scope(
    path: str = "/ws",
    *,
    query_string: bytes = b"",
    subprotocols: list[str] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Scope:
    """A WebSocket handshake scope, as a server would build it."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "headers": headers or [(b"host", b"testserver")],
        "subprotocols": subprotocols or [],
        "extensions": extensions if extensions is not None else {},
        "state": {},
    }


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 2.0) -> None:
    """Wait until `check()` (sync or async) is true, polling; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.005)


def handler_app(script: Callable[[WebSocketHandler], Awaitable[None]]) -> ASGIApp:
    """An ASGI app running `script` with a bare WebSocketHandler."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await script(WebSocketHandler(scope, receive, send))

    return app


def session(app: ASGIApp, scope: Scope | None = None, **options: Any) -> WebSocketTestSession:
    return WebSocketTestSession(app, scope if scope is not None else ws_scope(), timeout=3.0, **options)


class _AppStub:
    """What the endpoint runner reads from `scope["app"]`: the service and the event bus."""

    def __init__(self, service: Any, events: Any) -> None:
        self.websockets = service
        self.events = events


def endpoint_app(
    endpoint: Any, service: Any, events: Any = None, container: Container | None = None
) -> ASGIApp:
    """Serve `endpoint` through the real runner, with `service` as the app's WebSocketService."""
    served = build_websocket_endpoint(endpoint, container or Container(), ())
    stub = _AppStub(service, events if events is not None else service.events)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = stub
        await served(scope, receive, send)

    return app


class Member(WebSocketController):
    """Joins the rooms of `?rooms=a,b` as `?user=NAME`, then says `{"type": "ready", "id": ...}`."""

    receives = "any"

    async def on_connect(self) -> None:
        await self.accept()
        for room in filter(None, self.query.get("rooms", "").split(",")):
            await self.join(room, self.query.get("user", ""))
        await self.send_json({"type": "ready", "id": self.id})


async def member(
    stack: contextlib.AsyncExitStack, app: ASGIApp, rooms: str = "", user: str = "", **options: Any
) -> tuple[WebSocketTestSession, str]:
    """Open a session as a `Member` (closed with `stack`); returns it and its connection id."""
    query = f"rooms={rooms}&user={user}".encode()
    ws = await stack.enter_async_context(session(app, ws_scope(query_string=query), **options))
    ready = await ws.receive_json()
    assert ready["type"] == "ready"
    return ws, ready["id"]
