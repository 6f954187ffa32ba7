"""The tutorial's chat room: a page, a WebSocket per visitor, rooms,
presence, and a refusal the page can show. Run: wirehall run app:app"""

import msgspec

from wirehall import (
    FileResponse,
    PresenceDiff,
    WebSocketController,
    WebSocketService,
    Wirehall,
)

app = Wirehall()  # WIREHALL_BACKPLANE=redis://... joins several processes
app.serve_client()  # the browser client, at /wirehall.js
app.static("/static", "static")  # chat.js


@app.get("/")
async def index() -> FileResponse:
    return FileResponse("static/index.html")


class Say(msgspec.Struct, tag="say", tag_field="type"):
    """What a visitor sends: {"type": "say", "text": "..."}."""

    text: str


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    """wirehall.js pings a quiet line; any answer keeps it alive."""


@app.websocket("/ws/{room}")
class ChatRoom(WebSocketController):
    message_type = Say | Ping  # decoded from JSON by its "type" field
    max_message_size = 4096  # bytes; bigger closes the connection (1009)

    async def on_connect(self, room: str, name: str = "") -> None:
        name = name.strip()  # `room` from the path, `name` from ?name=
        if not 1 <= len(name) <= 32:
            # accepted, then closed with 4403 and this reason, which a
            # page can show (it cannot read an HTTP 403 answer)
            reason = "pick a name of 1 to 32 characters"
            await self.refuse(403, reason, readable=True)
            return
        await self.accept()
        await self.join(room, identity=name)  # shown in presence as `name`

    async def on_message(
        self,
        message: Say | Ping,
        room: str,  # hook parameters are filled like on_connect's
        name: str,
        service: WebSocketService,  # a dependency, by type
    ) -> None:
        if isinstance(message, Ping):
            await self.send_json({"type": "pong"})
            return
        text = message.text.strip()[:500]
        if text:
            said = {"type": "said", "name": name.strip(), "text": text}
            await service.broadcast(room, said)  # every member, every process


@app.events.on(PresenceDiff)  # people joined or left a room with members here
async def announce(diff: PresenceDiff) -> None:
    members = await app.websockets.presence(diff.room)  # {id: name}, all processes
    people = sorted(set(members.values()))
    app.websockets.broadcast_local(diff.room, {"type": "people", "names": people})
