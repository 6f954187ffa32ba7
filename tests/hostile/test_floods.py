"""Cross-site posts, message floods and connection floods against a real chat server.

The chat runs under `wirehall run` in a subprocess (tests/examples/chat_server.py) with a
small rate limit and a per-address cap from its environment; the attackers are httpx and
the `websockets` library on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.examples.chat_server import ChatServer, running

RATE = 5  # CHAT_RATE_LIMIT: messages a second per connection, bursts of 3 x 5 = 15
BURST = 3 * RATE
CAP = 3  # CHAT_MAX_CONNECTIONS_PER_ADDRESS
WAIT = 10.0  # seconds any one frame or answer may take


@pytest.fixture
def server(
    tmp_path: Path, unused_port: int, monkeypatch: pytest.MonkeyPatch, server_ws: str
) -> Iterator[ChatServer]:
    monkeypatch.setenv("CHAT_RATE_LIMIT", str(RATE))
    monkeypatch.setenv("CHAT_MAX_CONNECTIONS_PER_ADDRESS", str(CAP))
    database = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    with running(ChatServer(unused_port, database, tmp_path / "server.log", ws=server_ws)) as chat:
        yield chat


@pytest.fixture
async def http(server: ChatServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url, trust_env=False, timeout=WAIT) as client:
        yield client


def socket_to(server: ChatServer, room: str, user: str) -> Any:
    return connect(server.ws_url(room, user=user), proxy=None, open_timeout=WAIT, close_timeout=WAIT)


async def stored(http: httpx.AsyncClient, room: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/rooms/{room}/messages", params={"since": 0, "limit": 500})
    assert response.status_code == 200, response.text
    return response.json()["messages"]  # type: ignore[no-any-return]


async def welcome(ws: ClientConnection) -> None:
    frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert frame["type"] == "welcome", frame


async def test_cross_site_and_non_json_posts_are_refused_and_store_nothing(http: httpx.AsyncClient) -> None:
    body = json.dumps({"user": "victim", "text": "posted by evil.example"}).encode()
    cases = [
        ({"origin": "http://evil.example", "content-type": "text/plain"}, 403),
        ({"origin": "http://evil.example", "content-type": "application/json"}, 403),
        ({"origin": "null", "content-type": "application/x-www-form-urlencoded"}, 403),
        ({"content-type": "text/plain"}, 415),
        ({}, 415),
    ]
    for headers, status in cases:
        response = await http.post("/api/rooms/lobby/messages", content=body, headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert "error" in response.json()
    assert await stored(http, "lobby") == []
    own = await http.post(
        "/api/rooms/lobby/messages",
        content=body,
        headers={"origin": str(http.base_url).rstrip("/"), "content-type": "application/json"},
    )
    assert own.status_code == 201, own.text


async def test_a_websocket_flooder_gets_error_frames_then_1008_and_stores_about_the_burst(
    server: ChatServer, http: httpx.AsyncClient
) -> None:
    errors = 0
    started = time.monotonic()
    async with socket_to(server, "flood", "flooder") as ws:
        await welcome(ws)

        async def flood() -> None:
            payload = json.dumps({"type": "message", "text": "spam"})
            for _ in range(5000):
                await ws.send(payload)

        sender = asyncio.ensure_future(flood())
        try:
            with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012  # reads until the close
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                    if frame["type"] == "error":
                        assert "rate limit" in frame["error"]
                        errors += 1
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert errors >= 1
    count = len(await stored(http, "flood"))
    assert BURST <= count <= RATE * elapsed + BURST + 1, (count, elapsed)


async def test_a_client_staying_above_the_rate_is_closed_too(
    server: ChatServer, http: httpx.AsyncClient
) -> None:
    # Four times the rate, paced: between refusals some messages get through, which must
    # not clear the count of refusals.
    started = time.monotonic()
    async with socket_to(server, "steady", "steady") as ws:
        await welcome(ws)

        async def paced() -> None:
            payload = json.dumps({"type": "message", "text": "a bit too fast"})
            for _ in range(RATE * 4 * 20):  # 20 s at most
                await ws.send(payload)
                await asyncio.sleep(1 / (RATE * 4))

        sender = asyncio.ensure_future(paced())
        try:
            with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012  # reads until the close
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert elapsed < 10, f"closed only after {elapsed:.1f} s"
    count = len(await stored(http, "steady"))
    assert count <= RATE * elapsed + BURST + 1, (count, elapsed)


async def test_the_handshake_past_the_cap_per_address_is_429(server: ChatServer) -> None:
    async with AsyncExitStack() as stack:
        held = [await stack.enter_async_context(socket_to(server, "crowd", f"u{i}")) for i in range(CAP)]
        for ws in held:
            await welcome(ws)
        with pytest.raises(InvalidStatus) as refused:
            async with socket_to(server, "crowd", "one-too-many"):
                pass
        assert refused.value.response.status_code == 429
        assert b"too many connections" in refused.value.response.body
        await held[0].close()
        # the server gives the place back once it has seen the close: retry until then
        deadline = time.monotonic() + WAIT
        while True:
            try:
                ws = await stack.enter_async_context(socket_to(server, "crowd", "next"))
                break
            except InvalidStatus as exc:
                status = exc.response.status_code
            assert status == 429
            assert time.monotonic() < deadline, "the closed connection's place was never given back"
            await asyncio.sleep(0.05)
        await welcome(ws)
