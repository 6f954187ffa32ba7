"""The native path of the test client: a server's WebSocket protocol class over an in-memory transport."""

from __future__ import annotations

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from tests.testing.test_websocket import echo
from tests.websocket._support import ws_scope
from wirehall.server.websocket import WebSocketProtocol
from wirehall.testing import TestClient
from wirehall.testing._native import DEFAULT_WEBSOCKET_ENV, websocket_protocol
from wirehall.testing.websocket import WebSocketTestSession
from wirehall.types import Message, Receive, Scope, Send


def test_the_path_is_named_or_given_as_a_class(monkeypatch: pytest.MonkeyPatch) -> None:
    assert websocket_protocol("asgi") is None
    assert websocket_protocol("native") is WebSocketProtocol
    assert websocket_protocol("websockets-sansio") is WebSocketsSansIOProtocol
    assert websocket_protocol("wirehall.server.websocket:WebSocketProtocol") is WebSocketProtocol
    assert websocket_protocol(WebSocketsSansIOProtocol) is WebSocketsSansIOProtocol
    monkeypatch.setenv(DEFAULT_WEBSOCKET_ENV, "native")
    assert websocket_protocol(None) is WebSocketProtocol
    monkeypatch.delenv(DEFAULT_WEBSOCKET_ENV)
    assert websocket_protocol(None) is None
    with pytest.raises(ValueError, match="is not a WebSocket path"):
        websocket_protocol("fast")
    with pytest.raises(ValueError, match=r"not an asyncio\.Protocol"):
        websocket_protocol("wirehall.testing._native:NATIVE_PROTOCOL")


@pytest.mark.parametrize("protocol", ["native", "websockets-sansio"])
async def test_a_native_session_speaks_http_and_frames_to_the_protocol(protocol: str) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await echo(scope, receive, send)

    scope = ws_scope("/ws/é", query_string=b"a=1", extensions={"test.extra": {}})
    async with WebSocketTestSession(app, scope, timeout=2.0, websocket=protocol) as ws:
        assert ws.is_native
        assert ws.subprotocol == "v1"
        assert ws.headers == [("x-a", "1")]  # the server's own handshake headers are left out
        await ws.send_text("x" * 100_000)  # a frame with a 64-bit length
        assert await ws.receive_text() == "x" * 100_000
        await ws.send_text("close")
        assert await ws.receive_close() == 4000
    (served,) = seen
    headers = dict(served["headers"])
    assert headers[b"upgrade"] == b"websocket"  # the upgrade request went through the server
    assert b"sec-websocket-key" in headers
    assert served["path"] == "/ws/é"
    assert served["query_string"] == b"a=1"
    assert served["client"] == ("127.0.0.1", 50000)
    assert "test.extra" in served["extensions"]  # what the test's scope adds is kept


async def test_a_close_code_no_frame_can_carry_drops_the_connection() -> None:
    heard: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        heard.append(await receive())

    async with WebSocketTestSession(app, ws_scope(), timeout=2.0, websocket="native") as ws:
        await ws.close(1006)
    assert heard[0]["type"] == "websocket.disconnect"
    assert heard[0]["code"] in (1005, 1006)  # no close frame came


async def test_the_client_names_the_path_its_sessions_take() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        await echo(scope, receive, send)

    for path, native in (("asgi", False), ("native", True)):
        async with (
            TestClient(app, lifespan=False, websocket=path) as client,
            client.websocket_connect("/ws", subprotocols=["v1"]) as ws,
        ):
            assert ws.is_native is native
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"


def test_a_test_that_does_not_ask_for_both_paths_cannot_open_a_default_websocket() -> None:
    # tests/conftest.py: only a test with the websocket_path fixture gets a default path
    with pytest.raises(pytest.fail.Exception, match="without the websocket_path fixture"):
        WebSocketTestSession(echo, ws_scope())
    assert WebSocketTestSession(echo, ws_scope(), websocket="asgi").is_native is False
