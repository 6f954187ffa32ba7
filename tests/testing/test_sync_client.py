"""`SyncTestClient` from plain `def` tests: no event loop in the test, the app on its own."""

from __future__ import annotations

import asyncio
import threading

import msgspec
import pytest

from wirehall import Request, Response, WebSocketController, Wirehall
from wirehall.errors import WebSocketDisconnectError, WirehallError
from wirehall.http.response import PlainTextResponse
from wirehall.testing import HandshakeRejectedError, LifespanError, SyncTestClient


class Shout(msgspec.Struct):
    text: str


def new_app() -> Wirehall:
    app = Wirehall(backplane="memory://")

    @app.post("/shout", status_code=201)
    async def shout(body: Shout) -> Shout:
        return Shout(body.text.upper())

    @app.get("/login")
    async def login() -> Response:
        response = PlainTextResponse("in")
        response.set_cookie("sid", "s-1")
        return response

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        return {"sid": request.cookies.get("sid")}

    @app.get("/loop")
    async def loop() -> dict[str, str]:
        return {"thread": threading.current_thread().name}

    @app.websocket("/ws/{room}")
    class Echo(WebSocketController):
        async def on_connect(self, room: str) -> None:
            if room == "closed":
                await self.refuse(403, "closed")
                return
            await self.accept()

        async def on_message(self, message: str, room: str) -> None:
            if message == "bye":
                await self.close(4000, "asked")
                return
            await self.send_json({"room": room, "text": message})

    return app


def test_lifespan_runs_on_enter_and_exit() -> None:
    app = new_app()
    log: list[str] = []
    app.on_startup(lambda: log.append("up"))
    app.on_shutdown(lambda: log.append("down"))
    client = SyncTestClient(app)
    assert log == []
    with client:
        assert log == ["up"]
    assert log == ["up", "down"]


def test_http_from_a_plain_def_test() -> None:
    with SyncTestClient(new_app()) as client:
        answer = client.post("/shout", json={"text": "hi"})
        assert answer.status_code == 201
        assert answer.json() == {"text": "HI"}
        assert client.post("/shout", json={"text": 3}).status_code == 422
        assert client.get("/nowhere").status_code == 404


def test_the_app_runs_on_another_thread_than_the_test() -> None:
    with SyncTestClient(new_app()) as client:
        thread = client.get("/loop").json()["thread"]
    assert thread != threading.current_thread().name
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # the test itself has no loop


def test_cookies_the_app_sets_are_sent_again() -> None:
    with SyncTestClient(new_app()) as client:
        client.get("/login")
        assert client.cookies.get("sid") == "s-1"
        assert client.get("/whoami").json() == {"sid": "s-1"}


@pytest.mark.usefixtures("websocket_path")
def test_websocket_messages_go_both_ways() -> None:
    with SyncTestClient(new_app()) as client, client.websocket_connect("/ws/lobby") as ws:
        ws.send_text("hello")
        assert ws.receive_json() == {"room": "lobby", "text": "hello"}
        ws.send_text("bye")
        with pytest.raises(WebSocketDisconnectError) as info:
            ws.receive()
        assert info.value.code == 4000
        assert ws.close_code == 4000


@pytest.mark.usefixtures("websocket_path")
def test_a_refused_handshake_carries_its_status() -> None:
    with SyncTestClient(new_app()) as client:
        with pytest.raises(HandshakeRejectedError) as info, client.websocket_connect("/ws/closed"):
            pass
        assert info.value.status == 403


@pytest.mark.usefixtures("websocket_path")
def test_receive_times_out_instead_of_hanging() -> None:
    with (
        SyncTestClient(new_app()) as client,
        client.websocket_connect("/ws/lobby") as ws,
        pytest.raises(TimeoutError),
    ):
        ws.receive(timeout=0.05)


def test_a_request_outside_the_with_block_says_how_to_use_it() -> None:
    client = SyncTestClient(new_app())
    with pytest.raises(WirehallError, match="inside `with SyncTestClient"):
        client.get("/loop")
    with client:
        pass
    with pytest.raises(WirehallError, match="inside `with SyncTestClient"):
        client.get("/loop")


def test_a_failed_startup_is_raised_on_enter_and_stops_the_thread() -> None:
    app = new_app()

    def broken() -> None:
        raise RuntimeError("no database")

    app.on_startup(broken)
    before = threading.active_count()
    with pytest.raises(LifespanError, match="no database"), SyncTestClient(app):
        pass
    assert threading.active_count() == before


def test_entering_a_client_twice_at_once_is_refused() -> None:
    client = SyncTestClient(new_app())
    with client:
        with pytest.raises(WirehallError, match="entered already"), client:
            pass
        assert client.get("/loop").status_code == 200  # the first entry still serves
