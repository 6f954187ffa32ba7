"""wirehall, written the way its documentation shows.

Broadcast goes through the `WebSocketService`: every connection joins the room "bench"
in `on_connect`, and a broadcast command calls `service.broadcast("bench", payload)`.

`WIREHALL_BENCH_MAX_PENDING_BYTES`, when set, is the service's `max_pending_bytes` (the
byte budget past which a slow consumer is closed with 1013); the backplane is then the one
`WIREHALL_BACKPLANE` names, as `Wirehall()` would choose it.
"""

from __future__ import annotations

import os

from wirehall import WebSocketController, WebSocketService, Wirehall
from wirehall.backplane import backplane_from_url

__all__ = ["app"]

ROOM = "bench"


def _service() -> WebSocketService | None:
    budget = os.environ.get("WIREHALL_BENCH_MAX_PENDING_BYTES")
    if not budget:
        return None
    backplane = backplane_from_url(os.environ.get("WIREHALL_BACKPLANE", "").strip() or "memory://")
    return WebSocketService(backplane, max_pending_bytes=int(budget))


app = Wirehall(websockets=_service())


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
