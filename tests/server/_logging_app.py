"""An app that logs with its own logger, for the tests of `wirehall run`'s log configuration."""

from __future__ import annotations

import logging

from wirehall import WebSocketController, Wirehall

logger = logging.getLogger("myapp.orders")

app = Wirehall(backplane="memory://")


@app.get("/healthz")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/orders/{order_id:int}")
async def order(order_id: int) -> dict[str, int]:
    logger.info("order %d looked up", order_id)
    logger.debug("order %d: debug detail", order_id)
    return {"id": order_id}


@app.get("/boom")
async def boom() -> dict[str, str]:
    raise RuntimeError("failed while calling https://api.example/charge?token=SECRET-in-exception")


@app.websocket("/ws/{room}")
class Room(WebSocketController):
    async def on_connect(self, room: str) -> None:
        await self.accept()
        logger.info("joined %s", room)

    async def on_message(self, message: str) -> None:
        logger.info("said %s", message)
        await self.send_text(message)
