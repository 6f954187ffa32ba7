"""Capping simultaneous WebSocket connections per client address (`max_connections_per_address`)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import pytest

from wirehall import WebSocketController, Wirehall
from wirehall.errors import ConfigurationError
from wirehall.security.connection_limit import AddressCounter, ConnectionLimitMiddleware
from wirehall.testing.client import TestClient
from wirehall.testing.websocket import HandshakeRejectedError
from wirehall.types import Receive, Scope, Send

from ._asgi import echo_scope_app, handshake, passed_through, websocket_scope


def test_counter_refuses_past_the_limit_and_forgets_idle_addresses() -> None:
    counter = AddressCounter(2)
    assert counter.acquire("10.0.0.1")
    assert counter.acquire("10.0.0.1")
    assert not counter.acquire("10.0.0.1")
    assert counter.acquire("10.0.0.2")  # each address has its own count
    assert counter.count("10.0.0.1") == 2
    counter.release("10.0.0.1")
    assert counter.acquire("10.0.0.1")
    for _ in range(3):
        counter.release("10.0.0.1")
    counter.release("10.0.0.2")
    assert len(counter) == 0
    counter.release("10.0.0.9")  # releasing what was never held does not go negative
    assert counter.count("10.0.0.9") == 0


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
def test_counter_refuses_a_limit_that_is_not_a_positive_whole_number(limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        AddressCounter(limit)


@pytest.mark.parametrize("value", [-1, 2.0, None])
def test_app_refuses_a_bad_setting(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_connections_per_address"):
        Wirehall(max_connections_per_address=value)


def limited(max_per_address: int = 2) -> Wirehall:
    app = Wirehall(max_connections_per_address=max_per_address)

    class Echo(WebSocketController):
        async def on_connect(self) -> None:
            if self.query.get("refuse"):
                await self.refuse(403, "refused by the app")
                return
            if self.query.get("crash"):
                raise RuntimeError("boom")
            await self.accept()

        async def on_message(self, message: str) -> None:
            if message == "fail":
                raise RuntimeError("failed in a message")
            await self.send_text(message)

    app.add_websocket_route("/ws", Echo)
    return app


@pytest.mark.usefixtures("websocket_path")
async def test_the_handshake_past_the_cap_gets_429_with_a_json_reason() -> None:
    async with TestClient(limited(2)) as client, AsyncExitStack() as stack:
        for _ in range(2):
            ws = await stack.enter_async_context(client.websocket_connect("/ws"))
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"
        with pytest.raises(HandshakeRejectedError) as refused:
            async with client.websocket_connect("/ws"):
                pass
    assert refused.value.status == 429
    assert "too many connections" in refused.value.json()["error"]


@pytest.mark.usefixtures("websocket_path")
async def test_every_way_a_connection_ends_gives_its_place_back() -> None:
    app = limited(1)
    async with TestClient(app) as client:
        async with client.websocket_connect("/ws") as ws:  # the client closes
            await ws.send_text("a")
            assert await ws.receive_text() == "a"
        with pytest.raises(HandshakeRejectedError) as refused:  # the app refuses
            async with client.websocket_connect("/ws?refuse=1"):
                pass
        assert refused.value.status == 403
        with pytest.raises(HandshakeRejectedError) as crashed:  # on_connect raises
            async with client.websocket_connect("/ws?crash=1"):
                pass
        assert crashed.value.status == 500
        async with client.websocket_connect("/ws") as ws:  # on_message raises: closed 1011
            await ws.send_text("fail")
            await ws.receive_close()
        async with client.websocket_connect("/ws") as ws:  # still one place free
            await ws.send_text("b")
            assert await ws.receive_text() == "b"


async def test_middleware_releases_when_the_app_is_cancelled() -> None:
    started = asyncio.Event()

    async def hangs(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.Event().wait()

    middleware = ConnectionLimitMiddleware(hangs, max_per_address=1)
    task = asyncio.ensure_future(middleware(websocket_scope(), _never_receive, _discard))
    await asyncio.wait_for(started.wait(), 5)
    assert middleware.counter.count("127.0.0.1") == 1
    second = await handshake(middleware, websocket_scope(extensions={"websocket.http.response": {}}))
    assert second.http_status == 429
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert middleware.counter.count("127.0.0.1") == 0


async def test_connections_without_a_client_address_and_http_pass_uncounted() -> None:
    middleware = ConnectionLimitMiddleware(echo_scope_app, max_per_address=1)
    scope = websocket_scope()
    scope["client"] = None
    assert (await handshake(middleware, scope)).accepted
    assert len(middleware.counter) == 0
    http_scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": ("1.2.3.4", 1)}
    assert await passed_through(lambda app: ConnectionLimitMiddleware(app, 1), http_scope) == ["http"]


async def test_without_the_denial_extension_the_refusal_is_a_close_before_accept() -> None:
    started = asyncio.Event()

    async def holds(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.Event().wait()

    middleware = ConnectionLimitMiddleware(holds, max_per_address=1)
    task = asyncio.ensure_future(middleware(websocket_scope(), _never_receive, _discard))
    await asyncio.wait_for(started.wait(), 5)
    second = await handshake(middleware, websocket_scope())
    assert second.refused
    assert second.close_code == 1008
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _never_receive() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _discard(message: Any) -> None:
    return None
