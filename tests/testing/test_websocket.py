"""WebSocketTestSession: an in-process WebSocket client that behaves like a server would."""

from __future__ import annotations

import asyncio

import pytest

from tests.websocket._support import ws_scope
from wirehall.errors import WebSocketDisconnectError, WebSocketStateError
from wirehall.testing.websocket import HandshakeRejectedError, WebSocketTestSession
from wirehall.types import Message, Receive, Scope, Send

pytestmark = pytest.mark.usefixtures("websocket_path")  # every test here runs on both WebSocket paths


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": "v1", "headers": [(b"x-a", b"1")]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
            assert (await receive()) == {"type": "websocket.disconnect", "code": 4000, "reason": "asked"}
            return
        if text == "crash":
            raise ZeroDivisionError("app bug")
        await send({"type": "websocket.send", "text": text, "bytes": message.get("bytes")})


def open_session(app: object, **options: object) -> WebSocketTestSession:
    return WebSocketTestSession(app, ws_scope(), timeout=2.0, **options)  # type: ignore[arg-type]


async def test_messages_go_both_ways_and_the_accept_is_recorded() -> None:
    async with open_session(echo) as ws:
        assert ws.subprotocol == "v1"
        assert ws.headers == [("x-a", "1")]
        await ws.send_text("a")
        assert await ws.receive_text() == "a"
        await ws.send_bytes(b"b")
        assert await ws.receive_bytes() == b"b"
        await ws.send_json({"c": [1]})
        assert await ws.receive_json() == {"c": [1]}


async def test_frame_kind_mismatch_is_reported() -> None:
    async with open_session(echo) as ws:
        await ws.send_bytes(b"b")
        with pytest.raises(TypeError, match="expected a text frame"):
            await ws.receive_text()
        await ws.send_text("t")
        with pytest.raises(TypeError, match="expected a binary frame"):
            await ws.receive_bytes()


async def test_receive_times_out() -> None:
    async with open_session(echo) as ws:
        with pytest.raises(TimeoutError, match=r"0\.05s"):
            await ws.receive(timeout=0.05)


async def test_server_close_is_reported_and_the_app_hears_its_own_close() -> None:
    async with open_session(echo) as ws:
        await ws.send_text("close")
        with pytest.raises(WebSocketDisconnectError) as info:
            await ws.receive()
        assert info.value.code == 4000
        assert ws.close_code == 4000
        assert ws.close_reason == "asked"
        with pytest.raises(WebSocketDisconnectError):
            await ws.receive()  # stays closed
        with pytest.raises(WebSocketDisconnectError):
            await ws.send_text("late")


async def test_receive_close_skips_messages_and_returns_the_code() -> None:
    async with open_session(echo) as ws:
        await ws.send_text("one")
        await ws.send_text("close")
        assert await ws.receive_close() == 4000


async def test_app_exception_is_raised_by_the_waiting_receive() -> None:
    async def crash_the_app() -> None:
        async with open_session(echo) as ws:
            await ws.send_text("crash")
            await ws.receive()

    with pytest.raises(ZeroDivisionError, match="app bug"):
        await crash_the_app()


async def test_app_exception_is_raised_on_exit() -> None:
    async def crash_the_app() -> None:
        async with open_session(echo) as ws:
            await ws.send_text("crash")

    with pytest.raises(ZeroDivisionError, match="app bug"):
        await crash_the_app()


async def test_app_ending_without_a_close_ends_the_connection(websocket_path: str) -> None:
    async def quitter(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async with open_session(quitter) as ws:
        with pytest.raises(WebSocketDisconnectError) as info:
            await ws.receive()
        # through ASGI the connection just drops, as uvicorn's does (1006); wirehall's
        # protocol closes it for the app with 1000
        assert info.value.code == (1006 if websocket_path == "asgi" else 1000)


async def test_sending_after_client_close_is_a_state_error() -> None:
    async with open_session(echo) as ws:
        await ws.close()
        with pytest.raises(WebSocketStateError):
            await ws.send_text("x")
        with pytest.raises(WebSocketStateError):
            await ws.receive()


async def test_handshake_refusals_carry_the_status() -> None:
    async def close_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    async def deny(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        assert "websocket.http.response" in scope["extensions"]
        await send({"type": "websocket.http.response.start", "status": 418, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"tea", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"pot"})

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    with pytest.raises(HandshakeRejectedError) as info:
        async with open_session(close_before_accept):
            pass
    assert info.value.status == 403
    with pytest.raises(HandshakeRejectedError) as info:
        async with open_session(deny):
            pass
    assert info.value.status == 418
    assert info.value.body == b"teapot"
    with pytest.raises(HandshakeRejectedError) as info:
        async with open_session(silent):
            pass
    assert info.value.status == 500


async def test_an_app_that_never_answers_the_handshake_times_out() -> None:
    async def hang(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(60)

    with pytest.raises(TimeoutError, match="handshake"):
        async with WebSocketTestSession(hang, ws_scope(), timeout=0.1):
            pass


async def test_an_app_that_ignores_the_disconnect_is_cancelled_and_reported() -> None:
    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.sleep(60)

    with pytest.raises(TimeoutError, match="did not finish"):
        async with WebSocketTestSession(stubborn, ws_scope(), timeout=0.1):
            pass


async def test_buffer_makes_the_apps_sends_wait_for_the_reader() -> None:
    sent: list[int] = []

    async def producer(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for n in range(10):
            await send({"type": "websocket.send", "text": str(n)})
            sent.append(n)
        await receive()

    async with open_session(producer, buffer=3) as ws:
        await asyncio.sleep(0.05)
        assert sent == [0, 1, 2]  # three unread frames fill the buffer
        assert [await ws.receive_text() for _ in range(10)] == [str(n) for n in range(10)]
        assert sent == list(range(10))


async def test_sends_to_a_closed_client_raise_oserror() -> None:
    failures: list[BaseException] = []
    closed = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message: Message = await receive()
        assert message["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "late"})
        except OSError as exc:
            failures.append(exc)
        closed.set()

    async with open_session(app) as ws:
        await ws.close(1001)
        await asyncio.wait_for(closed.wait(), 2)
    assert len(failures) == 1


async def test_without_denial_responses_the_extension_is_not_offered() -> None:
    async def check(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        assert "websocket.http.response" not in scope["extensions"]
        await send({"type": "websocket.accept"})
        await receive()

    async with open_session(check, denial_responses=False):
        pass
