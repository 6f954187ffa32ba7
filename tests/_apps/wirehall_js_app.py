"""A small app for the wirehall.js browser tests, run with `wirehall run`.

`/ws?user=NAME[&since=ID]`: a welcome with the messages after `since` (all of them
without it), then every message said in the one room, each with an id that only grows.
Messages are kept in the JSON-lines file `WIREHALL_JS_MESSAGES` names, so they survive a
restart. The name `mallory` is refused readably (accepted, then closed with 4403 and a
reason); `deaf`'s pings go unanswered. `/` is a page that drives `wirehall.js` and shows its state (`page.js`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs

from wirehall import HTTPController, Response, WebSocketController, Wirehall

ROOM = "all"
HERE = Path(__file__).parent / "wirehall_js"
MESSAGES = Path(os.environ.get("WIREHALL_JS_MESSAGES", "wirehall-js-messages.jsonl"))

app = Wirehall(backplane="memory://", docs_url=None, openapi_url=None, asyncapi_url=None)
app.serve_client()
app.static("/static", HERE)


def stored() -> list[dict[str, object]]:
    if not MESSAGES.exists():
        return []
    return [json.loads(line) for line in MESSAGES.read_text().splitlines() if line]


def store(user: str, text: str) -> dict[str, object]:
    """Append a message (tiny files, one process: the blocking write is fine here)."""
    message: dict[str, object] = {"type": "said", "id": len(stored()) + 1, "user": user, "text": text}
    with MESSAGES.open("a") as file:
        file.write(json.dumps(message) + "\n")
    return message


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.route("/")
class Page(HTTPController):
    async def get(self) -> Response:
        return self.send_file(HERE / "index.html")


@app.websocket("/ws")
class Talk(WebSocketController):
    receives = "text"

    async def on_connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.name = query.get("user", [""])[0]
        since = int(query.get("since", ["0"])[0])
        if self.name == "mallory":
            await self.refuse(403, "that name is not allowed", readable=True)
            return
        await self.accept()
        # join first, then read: a message said in between comes twice (the page drops the
        # repeat by id) and none is lost
        await self.join(ROOM, self.name)
        history = [message for message in stored() if int(str(message["id"])) > since]
        await self.send_json({"type": "welcome", "history": history})

    async def on_message(self, raw: str) -> None:
        frame = json.loads(raw)
        if frame.get("type") == "ping":
            if self.name != "deaf":  # a server that stopped answering, as a page sees one
                await self.send_json({"type": "pong"})
        elif frame.get("type") == "say":
            await app.websockets.broadcast(ROOM, store(self.name, str(frame["text"])))
