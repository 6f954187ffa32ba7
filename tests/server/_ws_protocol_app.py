"""The app tests/server/test_websocket_protocol.py serves with `wirehall run`, on each WebSocket path.

- `/ws/echo?tag=T`: a controller echoing text and bytes (`receives = "any"`, 4096-byte messages);
  its close code is kept under T, read back with `GET /disconnects/T`.
- `/ws/room/{room}?tag=T`: text only; every message is broadcast to the room as it came.
- `/ws/fn?tag=T`: a function endpoint echoing text and bytes until the client leaves.
- `/ws/closer`: the first message, `{"code": C, "reason": R}`, closes the connection with them.
- `/ws/refuse?status=S&detail=D`: the handshake is refused with HTTP S (a JSON body).
- `/ws/big`: a message `N` is answered with N bytes of text, then N bytes of binary.
- `/raw/close`: a plain ASGI app (mounted): accepts, and the first message `{"code": C,
  "reason": R}` is sent as its `websocket.close`, whatever R's length.
- `/ws/proto`: accepts `wirehall.v2` if offered, else `wirehall.v1`, else no subprotocol; echoes.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from wirehall import WebSocketController, Wirehall
from wirehall.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

ECHO_MAX = 4096  # bytes a message to /ws/echo may have
ROOM_MAX = 16384  # bytes a message to a room may have
SUBPROTOCOLS = ("wirehall.v2", "wirehall.v1")  # in the server's order of preference

app = Wirehall()
disconnects: dict[str, int] = {}


class CloseRequest(msgspec.Struct):
    code: int
    reason: str = ""


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/disconnects/{tag}")
async def disconnect_code(tag: str) -> dict[str, int | None]:
    return {"code": disconnects.get(tag)}


def _remember(ws: WebSocketController, code: int) -> None:
    tag = ws.query.get("tag")
    if tag:
        disconnects[tag] = code


@app.websocket("/ws/echo")
class Echo(WebSocketController):
    receives = "any"
    max_message_size = ECHO_MAX

    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.send_text(message)
        else:
            await self.send_bytes(message)

    async def on_disconnect(self, code: int) -> None:
        _remember(self, code)


@app.websocket("/ws/room/{room}")
class Room(WebSocketController):
    max_message_size = ROOM_MAX

    async def on_connect(self, room: str) -> None:
        await self.accept()
        await self.join(room)
        await self.send_text("joined")

    async def on_message(self, message: str, room: str) -> None:
        await self.service.broadcast(room, message)

    async def on_disconnect(self, code: int) -> None:
        _remember(self, code)


@app.websocket("/ws/fn")
async def echo_function(ws: WebSocketController) -> None:
    await ws.accept()
    async for message in ws:
        if isinstance(message, str):
            await ws.send_text(message)
        else:
            await ws.send_bytes(message)
    _remember(ws, ws.close_code or 0)


@app.websocket("/ws/closer")
class Closer(WebSocketController):
    async def on_message(self, message: str) -> None:
        request = msgspec.json.decode(message, type=CloseRequest)
        await self.close(request.code, request.reason)


@app.websocket("/ws/big")
class Big(WebSocketController):
    async def on_message(self, message: str) -> None:
        size = int(message)
        await self.send_text("t" * size)
        await self.send_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))


@app.websocket("/ws/refuse")
class Refuser(WebSocketController):
    async def on_connect(self) -> None:
        await self.refuse(int(self.query.get("status") or 403), self.query.get("detail"))


@app.websocket("/ws/proto")
class Negotiating(WebSocketController):
    async def on_connect(self) -> None:
        offered = self.subprotocols
        chosen = next((name for name in SUBPROTOCOLS if name in offered), None)
        await self.accept(subprotocol=chosen)

    async def on_message(self, message: Any) -> None:
        await self.send_text(str(message))


async def raw_close(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI WebSocket app: the server alone stands between its close and the wire."""
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    message = await receive()
    if message["type"] != "websocket.receive":
        return
    request = msgspec.json.decode(message.get("text") or "{}", type=CloseRequest)
    try:
        await send({"type": "websocket.close", "code": request.code, "reason": request.reason})
    except Exception:  # a server may refuse a reason too long for a close frame
        logger.exception(
            "the server refused the close of %d with a reason of %d bytes",
            request.code,
            len(request.reason.encode()),
        )


app.mount("/raw/close", raw_close)
