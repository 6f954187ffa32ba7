"""Hand-made ASGI scopes and message streams for testing HTTP pieces without an app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from wirehall.types import ASGIApp, Message, Receive


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    root_path: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """An HTTP scope as uvicorn would build it (headers lower-cased, latin-1)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": root_path,
        "query_string": query,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("203.0.113.7", 41234),
        "server": ("testserver", 80),
    }
    scope.update(extra)
    return scope


def body_stream(*chunks: bytes, disconnect: bool = False) -> Receive:
    """A `receive` giving `chunks` as http.request messages (then a disconnect, if asked)."""
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or (b"",))
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # like a server: nothing more until the client goes
        return {"type": "http.disconnect"}

    return receive


async def run_asgi(app: ASGIApp, scope: dict[str, Any], receive: Receive | None = None) -> list[Message]:
    """Run `app` on `scope` and return every message it sent."""
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive or body_stream(), send), timeout=5)
    return sent


def status_of(sent: list[Message]) -> int:
    return int(next(m for m in sent if m["type"] == "http.response.start")["status"])


def body_of(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def headers_of(sent: list[Message]) -> list[tuple[str, str]]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
