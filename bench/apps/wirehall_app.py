"""wirehall, written the way its documentation shows.

Broadcast goes through the `WebSocketService`: every connection joins the room "bench"
in `on_connect`, and a broadcast command calls `service.broadcast("bench", payload)`.
"""

from __future__ import annotations

from wirehall import WebSocketController, Wirehall

__all__ = ["app"]

ROOM = "bench"

app = Wirehall()


@app.get("/")
async def hello() -> str:
    return "Hello, world!"


@app.websocket("/ws")
class Room(WebSocketController):
    async def on_connect(self) -> None:
        await self.accept()
        await self.join(ROOM)

    async def on_message(self, message: str) -> None:
        if message.startswith("e"):
            await self.send_text(message)
        elif message.startswith("b"):
            await self.service.broadcast(ROOM, message[1:])
