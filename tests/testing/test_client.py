from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from wirehall import Request, Response, Wirehall
from wirehall.http.response import PlainTextResponse
from wirehall.testing.client import LifespanError, TestClient
from wirehall.types import Message, Receive, Scope, Send


def new_app() -> Wirehall:
    app = Wirehall(backplane="memory://")

    @app.route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def echo(request: Request) -> dict[str, Any]:
        return {
            "method": request.method,
            "body": (await request.body()).decode(),
            "cookie": request.headers.get("cookie"),
            "agent": request.headers.get("x-agent"),
            "client": list(request.client) if request.client else None,
            "url": str(request.url),
        }

    @app.get("/login")
    async def login() -> Response:
        response = PlainTextResponse("in")
        response.set_cookie("sid", "s-1")
        response.set_cookie("theme", "dark")
        return response

    @app.get("/logout")
    async def logout() -> Response:
        response = PlainTextResponse("out")
        response.delete_cookie("sid")
        return response

    return app


async def test_lifespan_runs_on_enter_and_exit() -> None:
    app = new_app()
    log: list[str] = []
    app.on_startup(lambda: log.append("up"))
    app.on_shutdown(lambda: log.append("down"))
    client = TestClient(app)
    assert log == []
    async with client:
        assert log == ["up"]
    assert log == ["up", "down"]


async def test_lifespan_can_be_left_out() -> None:
    app = new_app()
    log: list[str] = []
    app.on_shutdown(lambda: log.append("down"))
    async with TestClient(app, lifespan=False) as client:
        # the app starts itself on the first request
        assert (await client.get("/echo")).status_code == 200
    assert log == []
    await app.shutdown()
    assert log == ["down"]


async def test_every_http_method() -> None:
    async with TestClient(new_app()) as client:
        for method in ("post", "put", "patch", "delete", "options"):
            response = await getattr(client, method)("/echo")
            assert response.json()["method"] == method.upper()
        assert (await client.get("/echo")).json()["method"] == "GET"
        head = await client.head("/echo")
        assert (head.status_code, head.content) == (200, b"")
        custom = await client.request("POST", "/echo", content=b"payload")
        assert custom.json()["body"] == "payload"


async def test_cookies_set_by_the_app_are_kept_and_sent_back() -> None:
    async with TestClient(new_app()) as client:
        assert (await client.get("/echo")).json()["cookie"] is None
        await client.get("/login")
        assert client.cookies.get("sid") == "s-1"
        cookie = (await client.get("/echo")).json()["cookie"]
        assert sorted(cookie.split("; ")) == ["sid=s-1", "theme=dark"]
        await client.get("/logout")
        assert "sid" not in client.cookies
        assert (await client.get("/echo")).json()["cookie"] == "theme=dark"


async def test_default_headers_base_url_and_client_address() -> None:
    client = TestClient(
        new_app(),
        base_url="https://shop.example:8443",
        headers={"X-Agent": "suite"},
        client=("198.51.100.9", 4321),
    )
    async with client:
        data = (await client.get("/echo?x=1")).json()
    assert data["agent"] == "suite"
    assert data["client"] == ["198.51.100.9", 4321]
    assert data["url"] == "https://shop.example:8443/echo?x=1"


async def test_websocket_scope_carries_cookies_headers_and_subprotocols() -> None:
    async with TestClient(new_app(), base_url="https://chat.example", headers={"X-Agent": "suite"}) as client:
        await client.get("/login")
        scope = client.websocket_scope(
            "/ws/caf%C3%A9?user=ann",
            headers={"Origin": "https://chat.example"},
            subprotocols=["chat.v1", "chat.v2"],
        )
    headers = dict(scope["headers"])
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "wss"
    assert scope["path"] == "/ws/café"
    assert scope["raw_path"] == b"/ws/caf%C3%A9"
    assert scope["query_string"] == b"user=ann"
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert headers[b"host"] == b"chat.example"
    assert headers[b"origin"] == b"https://chat.example"
    assert headers[b"x-agent"] == b"suite"
    assert headers[b"sec-websocket-protocol"] == b"chat.v1, chat.v2"
    assert sorted(headers[b"cookie"].split(b"; ")) == [b"sid=s-1", b"theme=dark"]
    assert scope["server"] == ("chat.example", 443)


async def test_a_failed_startup_raises_lifespan_error() -> None:
    app = new_app()

    def broken() -> None:
        raise RuntimeError("cannot start")

    app.on_startup(broken)
    with pytest.raises(LifespanError, match="cannot start"):
        async with TestClient(app):
            pass


async def test_a_failed_shutdown_raises_lifespan_error() -> None:
    app = new_app()

    def broken() -> None:
        raise RuntimeError("cannot stop")

    app.on_shutdown(broken)
    with pytest.raises(LifespanError, match="cannot stop"):
        async with TestClient(app):
            pass


async def plain_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app that does not speak lifespan: it returns at once."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"path": scope["path"]}).encode()})


async def test_an_app_without_lifespan_support_still_works() -> None:
    async with TestClient(plain_app) as client:
        assert (await client.get("/x")).json() == {"path": "/x"}


async def test_an_app_crashing_in_lifespan_is_reported() -> None:
    async def crashing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            raise ValueError("crashed in lifespan")

    with pytest.raises(LifespanError) as info:
        async with TestClient(crashing):
            pass
    assert isinstance(info.value.__cause__, ValueError)


async def test_a_raw_lifespan_app_gets_startup_and_shutdown() -> None:
    seen: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message: Message = await receive()
                seen.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await plain_app(scope, receive, send)

    async with TestClient(lifespan_app) as client:
        assert seen == ["lifespan.startup"]
        assert (await client.get("/y")).status_code == 200
    assert seen == ["lifespan.startup", "lifespan.shutdown"]


def test_one_app_is_served_again_in_a_later_event_loop(websocket_path: str) -> None:
    # a module-level app used by several tests: each test runs its lifespan on its own loop
    from wirehall import WebSocketController

    app = Wirehall()

    @app.get("/hi")
    async def hi() -> str:
        return "hi"

    @app.websocket("/ws")
    class Echo(WebSocketController):
        async def on_connect(self) -> None:
            await self.accept()
            await self.join("room")

        async def on_message(self, message: str) -> None:
            await self.service.broadcast("room", message)

    async def serve_once(text: str) -> str:
        async with TestClient(app) as client:
            assert (await client.get("/hi")).text == "hi"
            async with client.websocket_connect("/ws") as ws:
                await ws.send_text(text)
                return await ws.receive_text()

    assert asyncio.run(serve_once("first")) == "first"
    assert asyncio.run(serve_once("second")) == "second"  # the service starts again, on a new loop
