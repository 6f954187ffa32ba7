"""The typed route's floor: a bare ASGI app decoding and validating with msgspec directly.

`POST /items/{id}?limit=N&verbose=B` with a JSON `Item` body: the path and query parsed by
hand, the body decoded and validated in one msgspec pass, the answer encoded by msgspec.
What any framework adds to this is the price of its routing and binding.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec

from bench.apps.typed_common import Echo, Item

__all__ = ["app"]

_decode = msgspec.json.Decoder(Item).decode
_encode = msgspec.json.Encoder().encode
_JSON = [(b"content-type", b"application/json")]


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/":  # the benchmark's readiness probe
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"13")]})
        await send({"type": "http.response.body", "body": b"Hello, world!"})
        return
    if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith("/items/"):
        await _answer(send, 404, b'{"error": "Not Found"}')
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        item_id = int(path[len("/items/") :])
        query = dict(parse_qsl(scope["query_string"].decode()))
        limit = int(query.get("limit", "10"))
        if not 1 <= limit <= 500:
            raise ValueError("limit")
        verbose = query.get("verbose", "false") in ("true", "1")
        item = _decode(body)
    except (ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        await _answer(send, 422, _encode({"error": str(exc)}))
        return
    await _answer(send, 200, _encode(Echo(item_id, limit, verbose, item)))
