"""The app tests/websocket/test_server.py serves with uvicorn in a subprocess.

`/ws/{room}` joins the room and says `{"type": "joined", "id": ...}`. A text frame
`{"burst": N, "size": S, "room": R}` broadcasts N messages `{"seq": i, "pad": "x" * S}`
to room R; `{"type": "ping"}` gets `{"type": "pong"}`; other JSON gets an error frame.
Environment: WH_TEST_MAX_QUEUE (the service's max_queue).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from wirehall import WebSocketController, WebSocketService, Wirehall


class Burst(msgspec.Struct, tag="burst", tag_field="type"):
    room: str
    count: int
    size: int = 0


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


service = WebSocketService(max_queue=int(os.environ.get("WH_TEST_MAX_QUEUE", "1024")), heartbeat_interval=0)
app = Wirehall(websockets=service)
service.events = app.events


@app.get("/healthz")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "connections": service.connection_count}


@app.websocket("/ws/{room}")
class Room(WebSocketController):
    message_type = Burst | Ping
    close_timeout = 30.0  # tests read a stalled socket only after the others are done

    async def on_connect(self, room: str) -> None:
        await self.accept()
        await self.join(room, self.query.get("user", ""))
        await self.send_json({"type": "joined", "id": self.id})

    async def on_message(self, message: Burst | Ping) -> None:
        if isinstance(message, Ping):
            await self.send_json({"type": "pong"})
            return
        pad = "x" * message.size
        for seq in range(message.count):
            await self.service.broadcast(message.room, {"seq": seq, "pad": pad})
        await self.send_json({"type": "burst-done"})


# tests/hostile/test_stalled_peer.py: the slow-consumer limits come from the environment,
# and `/hurried/{room}` gives a stalled peer `WH_TEST_CLOSE_TIMEOUT` seconds for its close frame.
if "WH_TEST_DRAIN_TIMEOUT" in os.environ:
    service.drain_timeout = float(os.environ["WH_TEST_DRAIN_TIMEOUT"])
if "WH_TEST_MAX_PENDING_BYTES" in os.environ:
    service.max_pending_bytes = int(os.environ["WH_TEST_MAX_PENDING_BYTES"])


@app.get("/presence/{room}")
async def presence(room: str) -> dict[str, str]:
    return await service.presence(room)


@app.websocket("/hurried/{room}")
class Hurried(Room):
    close_timeout = float(os.environ.get("WH_TEST_CLOSE_TIMEOUT", "1.0"))
