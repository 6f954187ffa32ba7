"""Helpers shared by the WebSocket tests: scopes and in-process sessions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from wirehall.testing.websocket import WebSocketTestSession
from wirehall.types import ASGIApp, Receive, Scope, Send
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


def handler_app(script: Callable[[WebSocketHandler], Awaitable[None]]) -> ASGIApp:
    """An ASGI app running `script` with a bare WebSocketHandler."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await script(WebSocketHandler(scope, receive, send))

    return app


def session(app: ASGIApp, scope: Scope | None = None, **options: Any) -> WebSocketTestSession:
    return WebSocketTestSession(app, scope if scope is not None else ws_scope(), timeout=3.0, **options)
