"""Starlette, written the way its documentation shows.

Broadcast is the idiomatic loop over a module-level set of `WebSocket` objects:
`for ws in clients: await ws.send_text(...)`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

__all__ = ["app"]

clients: set[WebSocket] = set()


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, world!")


class Room(WebSocketEndpoint):
    encoding = "text"

    async def on_connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        clients.add(websocket)

    async def on_receive(self, websocket: WebSocket, data: str) -> None:
        if data.startswith("e"):
            await websocket.send_text(data)
        elif data.startswith("b"):
            payload = data[1:]
            for ws in list(clients):  # a copy: members may leave while we await
                await ws.send_text(payload)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        clients.discard(websocket)


app = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", Room)])
