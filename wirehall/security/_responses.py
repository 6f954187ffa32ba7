"""Answers the security middleware sends by itself: JSON errors and refused handshakes."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from wirehall.types import Receive, Scope, Send
from wirehall.websocket.codes import CloseCode

__all__ = ["error_body", "refuse_websocket", "send_json_error"]

_JSON_HEADERS = ((b"content-type", b"application/json"),)
_encode = msgspec.json.Encoder().encode


def error_body(detail: str) -> bytes:
    """`{"error": detail}` as JSON bytes."""
    return _encode({"error": detail})


async def send_json_error(
    send: Send,
    status: int,
    detail: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete HTTP response with JSON body `{"error": detail}`."""
    body = error_body(detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *_JSON_HEADERS,
                (b"content-length", str(len(body)).encode("latin-1")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def refuse_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    close_code: int = CloseCode.POLICY_VIOLATION,
) -> None:
    """Refuse a WebSocket handshake that was not accepted yet.

    With the `websocket.http.response` extension the client gets an HTTP `status`
    with a JSON body; otherwise a close before accept, which servers turn into 403.
    """
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client left already (websocket.disconnect): nothing to answer
    extensions = scope.get("extensions") or {}
    if "websocket.http.response" in extensions:
        body = error_body(detail)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    *_JSON_HEADERS,
                    (b"content-length", str(len(body)).encode("latin-1")),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        # a close reason is at most 123 bytes of UTF-8
        reason = detail.encode()[:123].decode("utf-8", "ignore")
        await send({"type": "websocket.close", "code": int(close_code), "reason": reason})
