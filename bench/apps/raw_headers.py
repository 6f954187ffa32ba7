"""The HTTP baseline sending what wirehall sends by default: the raw app's hello world with
the three security headers (nosniff, frame options, referrer policy) added.

Benchmarked beside the raw app to show what those headers cost any app on this server (the
server checks every header a response carries), apart from a framework's own path.
"""

from __future__ import annotations

from typing import Any

from bench.apps.raw_asgi import app as raw_app

__all__ = ["app"]

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"13"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"strict-origin-when-cross-origin"),
    ],
}
_BODY = {"type": "http.response.body", "body": b"Hello, world!"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)
    else:  # the lifespan (and WebSockets) as the raw app serves them
        await raw_app(scope, receive, send)
