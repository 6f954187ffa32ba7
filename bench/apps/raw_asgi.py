"""The baseline: a bare ASGI 3 callable, no framework.

Broadcast is the plain sequential loop: `for send in clients: await send(message)`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]

Scope = dict[str, Any]
Message = dict[str, Any]

_HELLO_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")],
}
_HELLO_BODY: Message = {"type": "http.response.body", "body": b"Hello, world!"}

# insertion-ordered set of the open connections' `send` callables
clients: dict[Any, None] = {}


async def app(scope: Scope, receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        await send(_HELLO_START)
        await send(_HELLO_BODY)
    elif kind == "websocket":
        await _websocket(receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _websocket(receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    clients[send] = None
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if not text:
                continue
            if text[0] == "e":
                await send({"type": "websocket.send", "text": text})
            elif text[0] == "b":
                out = {"type": "websocket.send", "text": text[1:]}
                for member in list(clients):
                    try:  # noqa: SIM105 - cheaper than contextlib.suppress per send
                        await member(out)
                    except Exception:  # noqa: BLE001 - that member disconnected meanwhile
                        pass
    finally:
        clients.pop(send, None)
