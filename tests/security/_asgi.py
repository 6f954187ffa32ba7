"""Small ASGI drivers for the security middleware tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import msgspec

from wirehall.types import ASGIApp, Message, Receive, Scope, Send


def client(app: ASGIApp, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """An httpx client talking to `app` in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def echo_scope_app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP: answers 200 JSON with the user, session and body; WS: accepts and sends the same."""
    if scope["type"] == "http":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = {
            "user": scope.get("user"),
            "session": scope.get("session"),
            "csrf_token": scope.get("csrf_token"),
            "body": body.decode("latin-1"),
        }
        data = msgspec.json.encode(payload)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})
    elif scope["type"] == "websocket":
        message = await receive()
        assert message["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        payload = {"user": scope.get("user"), "session": scope.get("session")}
        await send({"type": "websocket.send", "text": msgspec.json.encode(payload).decode()})
        await send({"type": "websocket.close", "code": 1000})


def websocket_scope(
    path: str = "/ws",
    *,
    headers: Iterable[tuple[str, str]] = (),
    query_string: bytes = b"",
    scheme: str = "ws",
    server: tuple[str, int] | None = ("testserver", 80),
    extensions: dict[str, Any] | None = None,
) -> Scope:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "server": server,
        "client": ("127.0.0.1", 50000),
        "subprotocols": [],
        "extensions": extensions if extensions is not None else {},
        "state": {},
    }


class Handshake:
    """What the app sent during one driven WebSocket handshake."""

    def __init__(self, sent: list[Message]) -> None:
        self.sent = sent

    @property
    def accepted(self) -> bool:
        return any(m["type"] == "websocket.accept" for m in self.sent)

    @property
    def refused(self) -> bool:
        """Closed before accept, or answered with an HTTP denial response."""
        first = self.sent[0]["type"] if self.sent else None
        return first in ("websocket.close", "websocket.http.response.start")

    @property
    def close_code(self) -> int | None:
        for m in self.sent:
            if m["type"] == "websocket.close":
                return int(m.get("code", 1000))
        return None

    @property
    def http_status(self) -> int | None:
        for m in self.sent:
            if m["type"] == "websocket.http.response.start":
                return int(m["status"])
        return None

    @property
    def http_body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "websocket.http.response.body")

    def texts(self) -> list[Any]:
        return [msgspec.json.decode(m["text"]) for m in self.sent if m["type"] == "websocket.send"]


async def handshake(app: ASGIApp, scope: Scope) -> Handshake:
    """Drive one WebSocket connection: connect, then disconnect on any further receive."""
    sent: list[Message] = []
    connected = False

    async def receive() -> Message:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    async with asyncio.timeout(5):
        await app(scope, receive, send)
    return Handshake(sent)


async def passed_through(wrap: Callable[[ASGIApp], ASGIApp], *scopes: Scope) -> list[str]:
    """The types of `scopes` that `wrap(app)` hands on to `app`, driving each once."""
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def no_receive() -> Message:
        raise AssertionError("the middleware read a message from a scope it should pass on")

    async def discard(message: Message) -> None:
        return None

    app = wrap(inner)
    for scope in scopes:
        await app(scope, no_receive, discard)
    return seen
