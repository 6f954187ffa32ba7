"""The security middleware behind a real uvicorn server and a real WebSocket client."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


async def test_foreign_origin_handshake_gets_http_403_with_json(server: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{server}/ws", origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    response = refused.value.response
    assert response.status_code == 403
    assert msgspec.json.decode(response.body) == {"error": "WebSocket origin not allowed"}


@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:{port}"])
async def test_own_or_missing_origin_connects(server: int, origin: str | None) -> None:
    headers = {} if origin is None else {"origin": origin.format(port=server)}
    async with connect(f"ws://127.0.0.1:{server}/ws", additional_headers=headers, open_timeout=10) as ws:
        assert await ws.recv() == "open"


async def test_http_responses_carry_the_default_headers(server: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server}", timeout=10) as client:
        page = await client.get("/")
        script = await client.get("/app.js")
        cookie_post = await client.post("/submit", data={"text": "x"})
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in script.headers
    assert script.headers["x-content-type-options"] == "nosniff"
    # the client kept the csrftoken cookie from the page, so the tokenless POST is refused
    assert cookie_post.status_code == 403
