"""The app the hostile tests attack through `wirehall run`: an echo WebSocket and two HTTP routes."""

from __future__ import annotations

from wirehall import WebSocketController, Wirehall

app = Wirehall(backplane="memory://")


@app.get("/healthz")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/echo")
async def echo() -> dict[str, str]:
    return {"status": "ok"}


@app.websocket("/ws/echo")
class Echo(WebSocketController):
    """Echoes text; refuses (403) a handshake whose query says `refuse=1`."""

    max_message_size = 65536

    async def on_connect(self) -> None:
        if self.query.get("refuse"):
            await self.refuse(403, "refused on request")
            return
        await self.accept()

    async def on_message(self, message: str) -> None:
        await self.send_text(message)
