"""The JSON error responses the security middleware sends by itself."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from wirehall.types import Send

__all__ = ["send_json_error"]

_JSON_HEADERS = ((b"content-type", b"application/json"),)
_encode = msgspec.json.Encoder().encode


async def send_json_error(
    send: Send,
    status: int,
    detail: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete HTTP response with JSON body `{"error": detail}`."""
    body = _encode({"error": detail})
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
