"""WebSocketHandler: the ASGI WebSocket state machine and its error messages."""

from __future__ import annotations

import asyncio

import pytest

from tests.websocket._support import handler_app, session, ws_scope
from wirehall.errors import WebSocketDisconnectError, WebSocketError, WebSocketStateError
from wirehall.testing.websocket import HandshakeRejectedError
from wirehall.websocket import CloseCode, WebSocketHandler, WebSocketState

pytestmark = pytest.mark.usefixtures("websocket_path")  # every test here runs on both WebSocket paths


async def test_accept_then_echo_text_bytes_and_json() -> None:
    async def script(ws: WebSocketHandler) -> None:
        assert ws.websocket_state is WebSocketState.CONNECTING
        await ws.accept()
        assert ws.is_open
        await ws.send_text(await ws.receive_text())
        await ws.send_bytes(await ws.receive_bytes())
        await ws.send_json({"got": await ws.receive_json()})
        async for message in ws:
            await ws.send_text(f"iter:{message!r}")

    async with session(handler_app(script)) as client:
        await client.send_text("héllo")
        assert await client.receive_text() == "héllo"
        await client.send_bytes(b"\x00\x01")
        assert await client.receive_bytes() == b"\x00\x01"
        await client.send_json([1, {"a": None}])
        assert await client.receive_json() == {"got": [1, {"a": None}]}
        await client.send_text("x")
        assert await client.receive_text() == "iter:'x'"


async def test_send_before_accept_says_to_accept_first() -> None:
    async def script(ws: WebSocketHandler) -> None:
        with pytest.raises(WebSocketStateError, match=r"before accept\(\)"):
            await ws.send_text("too early")
        with pytest.raises(WebSocketStateError, match=r"before accept\(\)"):
            await ws.receive()
        await ws.refuse()

    with pytest.raises(HandshakeRejectedError) as info:
        async with session(handler_app(script)):
            pass
    assert info.value.status == 403


async def test_accept_twice_is_a_state_error() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.accept()
        with pytest.raises(WebSocketStateError, match="already open"):
            await ws.accept()
        with pytest.raises(WebSocketStateError, match="only possible before accept"):
            await ws.refuse()
        await ws.send_text("ok")

    async with session(handler_app(script)) as client:
        assert await client.receive_text() == "ok"


async def test_receive_connect_twice_is_a_state_error() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.receive_connect()
        with pytest.raises(WebSocketStateError, match="twice"):
            await ws.receive_connect()
        await ws.accept()
        await ws.close()

    async with session(handler_app(script)) as client:
        assert await client.receive_close() == 1000


async def test_after_our_close_receive_is_a_state_error_and_send_a_disconnect() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.accept()
        await ws.close(4000, "bye")
        assert ws.close_code == 4000
        assert ws.websocket_state is WebSocketState.CLOSED
        with pytest.raises(WebSocketStateError, match="after the connection closed"):
            await ws.receive()
        with pytest.raises(WebSocketDisconnectError) as info:
            await ws.send_text("late")
        assert info.value.code == 4000
        await ws.close()  # closing twice is harmless

    async with session(handler_app(script)) as client:
        with pytest.raises(WebSocketDisconnectError) as info:
            await client.receive()
        assert info.value.code == 4000
        assert client.close_reason == "bye"


async def test_peer_disconnect_surfaces_as_disconnect_error_with_its_code() -> None:
    seen: list[object] = []

    async def script(ws: WebSocketHandler) -> None:
        await ws.accept()
        with pytest.raises(WebSocketDisconnectError) as info:
            await ws.receive()
        seen.append(info.value.code)
        with pytest.raises(WebSocketDisconnectError):
            await ws.send_text("to nobody")
        with pytest.raises(WebSocketStateError, match="stop receiving"):
            await ws.receive()
        seen.append(ws.close_code)

    async with session(handler_app(script)) as client:
        await client.close(4001)
    assert seen == [4001, 4001]


async def test_iteration_ends_at_disconnect() -> None:
    received: list[str | bytes] = []

    async def script(ws: WebSocketHandler) -> None:
        await ws.accept()
        async for message in ws:
            received.append(message)
        async for message in ws:  # stays ended
            received.append(message)

    async with session(handler_app(script)) as client:
        await client.send_text("a")
        await client.send_bytes(b"b")
    assert received == ["a", b"b"]


async def test_refuse_with_the_denial_extension_gives_the_status_and_a_json_body() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.refuse(401, "sign in first")

    with pytest.raises(HandshakeRejectedError) as info:
        async with session(handler_app(script)):
            pass
    assert info.value.status == 401
    assert info.value.json() == {"error": "sign in first"}
    assert ("content-type", "application/json") in info.value.headers


async def test_refuse_without_the_extension_is_a_close_before_accept() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.refuse(401)
        assert ws.close_code == CloseCode.POLICY_VIOLATION

    with pytest.raises(HandshakeRejectedError) as info:
        async with session(handler_app(script), denial_responses=False):
            pass
    assert info.value.status == 403


async def test_close_before_accept_refuses_the_handshake() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.close()

    with pytest.raises(HandshakeRejectedError) as info:
        async with session(handler_app(script)):
            pass
    assert info.value.status == 403


async def test_accept_with_subprotocol_and_headers() -> None:
    async def script(ws: WebSocketHandler) -> None:
        assert ws.subprotocols == ["chat.v2", "chat.v1"]
        await ws.accept(subprotocol="chat.v1", headers={"X-Node": "a"})
        await ws.close()

    scope = ws_scope(subprotocols=["chat.v2", "chat.v1"])
    async with session(handler_app(script), scope) as client:
        assert client.subprotocol == "chat.v1"
        assert client.headers == [("x-node", "a")]


async def test_wrong_frame_kind_and_bad_json_raise_websocket_errors() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.accept()
        with pytest.raises(WebSocketError) as info:
            await ws.receive_text()
        assert info.value.code == CloseCode.UNSUPPORTED_DATA
        with pytest.raises(WebSocketError) as info:
            await ws.receive_bytes()
        assert info.value.code == CloseCode.UNSUPPORTED_DATA
        with pytest.raises(WebSocketError) as info:
            await ws.receive_json()
        assert info.value.code == CloseCode.INVALID_PAYLOAD
        assert "invalid JSON" in info.value.reason
        await ws.close()

    async with session(handler_app(script)) as client:
        await client.send_bytes(b"bin")
        await client.send_text("text")
        await client.send_text("{not json")
        assert await client.receive_close() == 1000


async def test_close_checks_the_code_and_truncates_the_reason() -> None:
    async def script(ws: WebSocketHandler) -> None:
        await ws.accept()
        with pytest.raises(ValueError, match="1005 cannot be sent"):
            await ws.close(1005)
        await ws.close(1000, "é" * 100)

    async with session(handler_app(script)) as client:
        assert await client.receive_close() == 1000
        assert len(client.close_reason.encode()) <= 123


async def test_send_nowait_before_accept_is_delivered_after_it() -> None:
    async def script(ws: WebSocketHandler) -> None:
        ws.send_nowait({"type": "websocket.send", "text": "queued early"})
        await ws.accept()
        await ws.send_text("after accept")
        await ws.close()

    async with session(handler_app(script)) as client:
        assert await client.receive_text() == "queued early"
        assert await client.receive_text() == "after accept"


async def test_client_leaving_mid_send_gives_a_disconnect_not_a_crash() -> None:
    outcome: list[object] = []
    started = asyncio.Event()

    async def script(ws: WebSocketHandler) -> None:
        await ws.accept()
        started.set()
        try:
            for n in range(100_000):
                ws.send_nowait({"type": "websocket.send", "text": str(n)})
                await ws.send_text(str(n))
        except WebSocketDisconnectError as exc:
            outcome.append(exc.code)
        outcome.append(ws.websocket_state)

    async with session(handler_app(script), buffer=8) as client:
        await started.wait()
        await client.receive()
        await client.close(1001)
    assert outcome[-1] is WebSocketState.CLOSED
    assert len(outcome) == 2


async def test_client_leaving_before_the_handshake_is_reported() -> None:
    outcome: list[int] = []

    async def app_script(ws: WebSocketHandler) -> None:
        try:
            await ws.accept()
        except WebSocketDisconnectError as exc:
            outcome.append(exc.code)

    async def app(scope, receive, send):
        async def leaving() -> dict[str, object]:
            await receive()  # the connect
            return {"type": "websocket.disconnect", "code": 1006}

        await app_script(WebSocketHandler(scope, leaving, send))

    with pytest.raises(HandshakeRejectedError):
        async with session(app):
            pass
    assert outcome == [1006]


async def test_default_ids_are_unique_and_repr_names_the_state() -> None:
    async def noop_receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def noop_send(message: object) -> None:
        pass

    first = WebSocketHandler(ws_scope(), noop_receive, noop_send)
    second = WebSocketHandler(ws_scope(), noop_receive, noop_send)
    assert first.id != second.id
    assert first.id == first.id
    assert "connecting" in repr(first)
    assert first.close_code is None
    assert first.queued == 0
