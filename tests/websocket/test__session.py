"""The native path's session: a controller served by callback, and its `receive()`."""

from __future__ import annotations

import asyncio

from wirehall import WebSocketController, Wirehall
from wirehall.errors import WebSocketDisconnectError
from wirehall.testing import TestClient


async def test_a_reader_waiting_when_the_connection_closes_gets_the_close_and_never_hangs() -> None:
    # Not a supported way to read (messages go to on_message, and through ASGI a second
    # reader competes with the controller), but a task that waits in the session's
    # receive() when the connection closes must end, not keep the connection alive.
    app = Wirehall()
    ended: list[str] = []

    class Reader(WebSocketController):
        async def on_connect(self) -> None:
            await self.accept()
            self.reader = asyncio.create_task(self.read())

        async def read(self) -> None:
            try:
                while True:
                    await self.receive()
            except WebSocketDisconnectError as exc:
                ended.append(f"reader {exc.code} {exc.reason}")

        async def on_message(self, message: str) -> None:
            await self.send_text(message)

    app.websocket("/reader")(Reader)
    async with TestClient(app, websocket="native") as client:
        async with client.websocket_connect("/reader") as ws:
            await ws.send_text("a")
            await ws.close(1000, "bye")
        for _ in range(100):
            if ended:
                break
            await asyncio.sleep(0.01)
    assert ended == ["reader 1000 bye"]
