"""A small room app served by several processes in tests/backplane/test_multiprocess.py.

`/ws/{room}?user=NAME`: welcome, join the room, and every text frame received is broadcast
to the room as `{"type": "message", "text": ...}`. Whenever presence changes, the room
gets `{"type": "presence", "users": [...]}`. `GET /presence/{room}` answers the members.
Environment: WIREHALL_BACKPLANE (the backplane URL), ROOM_APP_HEARTBEAT (seconds
between backplane heartbeats, default 5).
"""

from __future__ import annotations

import asyncio
import logging
import os

from wirehall import BackplaneError, PresenceChanged, WebSocketController, WebSocketService, Wirehall

logger = logging.getLogger(__name__)

app = Wirehall()
app.websockets.heartbeat_interval = float(os.environ.get("ROOM_APP_HEARTBEAT", "5"))


@app.get("/healthz")
async def healthz(service: WebSocketService) -> dict[str, str]:
    return {"status": "ok", "node": service.node_id}


@app.get("/presence/{room}")
async def presence(room: str, service: WebSocketService) -> dict[str, dict[str, str]]:
    return {"members": await service.presence(room)}


@app.websocket("/ws/{room}")
class Room(WebSocketController):
    async def on_connect(self, room: str) -> None:
        await self.accept()
        await self.send_json({"type": "welcome", "id": self.id})
        await self.join(room, identity=self.query.get("user") or "anonymous")

    async def on_message(self, message: str, room: str) -> None:
        # during a backplane outage this still reaches the room's members on this process
        await self.service.broadcast(room, {"type": "message", "text": message})


_announced: dict[str, list[str]] = {}


async def send_presence(room: str, *, only_if_changed: bool = False) -> None:
    try:
        users = sorted(set((await app.websockets.presence(room)).values()))
        if only_if_changed and _announced.get(room, []) == users:
            return
        _announced[room] = users
        await app.websockets.broadcast(room, {"type": "presence", "users": users})
    except BackplaneError as exc:  # the next change, or the heartbeat after recovery, re-announces
        logger.warning("presence of %r not announced: %s", room, exc)


async def recheck(room: str) -> None:
    # two processes announcing at once may see their lists delivered in the opposite order
    # to the one they were read in; the one whose list turns out stale sends it again
    await asyncio.sleep(0.25)
    await send_presence(room, only_if_changed=True)


_rechecks: set[asyncio.Task[None]] = set()


async def announce(event: PresenceChanged) -> None:
    await send_presence(event.room)
    task = asyncio.get_running_loop().create_task(recheck(event.room))
    _rechecks.add(task)
    task.add_done_callback(_rechecks.discard)


app.events.subscribe(PresenceChanged, announce)
