"""The tutorial's chat room: one page, a WebSocket per visitor, rooms, presence and a refusal
the page can show. Run it with `wirehall run app:app` in this folder."""

import msgspec

from wirehall import FileResponse, PresenceDiff, WebSocketController, WebSocketService, Wirehall

app = Wirehall()  # WIREHALL_BACKPLANE=redis://... makes several processes one chat
app.serve_client()  # the browser client, at /wirehall.js
app.static("/static", "static")  # chat.js


@app.get("/")
async def index() -> FileResponse:
    return FileResponse("static/index.html")


class Say(msgspec.Struct, tag="say", tag_field="type"):
    """What a visitor sends: {"type": "say", "text": "..."}."""

    text: str


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    """wirehall.js pings when the line has been quiet; any answer keeps it alive."""


@app.websocket("/ws/{room}")
class ChatRoom(WebSocketController):
    message_type = Say | Ping  # JSON decoded and checked; anything else gets an error frame
    max_message_size = 4096  # bytes; a bigger message closes the connection with 1009

    async def on_connect(self, room: str, name: str = "") -> None:  # ?name=... from the query
        name = name.strip()
        if not 1 <= len(name) <= 32:
            # accept, then close with 4403 and this reason: a page can read it (an HTTP 403 it cannot)
            await self.refuse(403, "pick a name of 1 to 32 characters", readable=True)
            return
        await self.accept()
        await self.join(room, identity=name)

    async def on_message(self, message: Say | Ping, room: str, name: str, service: WebSocketService) -> None:
        if isinstance(message, Ping):
            await self.send_json({"type": "pong"})
            return
        text = message.text.strip()[:500]
        if text:
            await service.broadcast(room, {"type": "said", "name": name.strip(), "text": text})


@app.events.on(PresenceDiff)  # someone joined or left a room this process has members in
async def announce(diff: PresenceDiff) -> None:
    members = await app.websockets.presence(diff.room)  # {connection id: name}, every process
    people = sorted(set(members.values()))
    app.websockets.broadcast_local(diff.room, {"type": "people", "names": people})
