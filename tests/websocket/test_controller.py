"""WebSocketController hooks, typed messages, limits, errors and the endpoint runner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.websocket._support import eventually, session, ws_scope
from wirehall.app import Wirehall
from wirehall.di import Container
from wirehall.errors import ConfigurationError, WebSocketDisconnectError, WebSocketError
from wirehall.events import (
    ErrorRaised,
    EventBus,
    WebSocketConnected,
    WebSocketDisconnected,
    WebSocketMessageReceived,
)
from wirehall.security.auth import requires_auth
from wirehall.testing.client import TestClient
from wirehall.testing.websocket import HandshakeRejectedError
from wirehall.websocket import (
    CloseCode,
    RateLimit,
    WebSocketController,
    WebSocketService,
    build_websocket_endpoint,
)

pytestmark = pytest.mark.usefixtures("websocket_path")  # every test here runs on both WebSocket paths

# --- types used in hook annotations (module level, so that they resolve) -------------


class Greeter:
    def greet(self, name: str) -> str:
        return f"hello {name}"


class ConnectionLog:
    """A scoped value: one per connection, closed when the connection ends."""

    opened: ClassVar[list[ConnectionLog]] = []
    closed: ClassVar[list[ConnectionLog]] = []

    def __init__(self) -> None:
        self.entries: list[str] = []


async def connection_log() -> AsyncIterator[ConnectionLog]:
    log = ConnectionLog()
    ConnectionLog.opened.append(log)
    yield log
    ConnectionLog.closed.append(log)


class Say(msgspec.Struct, tag="say"):
    text: str


class Ping(msgspec.Struct, tag="ping"):
    pass


Inbound = Say | Ping


def make_app() -> Wirehall:
    return Wirehall()


# --- dependency injection -----------------------------------------------------------


async def test_hooks_get_query_values_on_a_route_without_path_params() -> None:
    app = make_app()

    @app.websocket("/lobby")
    class Lobby(WebSocketController):
        async def on_connect(self, name: str = "", seats: int = 1) -> None:
            await self.accept()
            await self.send_json({"name": name, "seats": seats})

        async def on_message(self, message: str, name: str) -> None:
            await self.send_text(f"{name}: {message}")

    async with TestClient(app) as client:
        async with client.websocket_connect("/lobby?name=ada&seats=3") as ws:
            assert await ws.receive_json() == {"name": "ada", "seats": 3}
            await ws.send_text("hi")
            assert await ws.receive_text() == "ada: hi"
        async with client.websocket_connect("/lobby") as ws:  # the defaults
            assert await ws.receive_json() == {"name": "", "seats": 1}
        with pytest.raises(HandshakeRejectedError) as refused:  # a value that does not fit: refused
            async with client.websocket_connect("/lobby?seats=many"):
                pass
        assert refused.value.status == 403


async def test_hooks_get_path_params_and_container_values_by_type() -> None:
    app = make_app()
    app.container.singleton(Greeter)
    app.container.scoped(ConnectionLog, connection_log)
    disconnects: list[tuple[int, str, bool]] = []

    @app.websocket("/ws/{room}/{n:int}")
    class Room(WebSocketController):
        async def on_connect(self, room: str, n: int, greeter: Greeter, log: ConnectionLog) -> None:
            await self.accept()
            log.entries.append("connect")
            await self.send_text(f"{greeter.greet(room)} #{n + 1}")

        async def on_message(self, message: str, log: ConnectionLog, room: str) -> None:
            log.entries.append(message)
            await self.send_json({"room": room, "entries": log.entries})

        async def on_disconnect(self, code: int, log: ConnectionLog, room: str) -> None:
            disconnects.append((code, room, log in ConnectionLog.opened))

    ConnectionLog.opened.clear()
    ConnectionLog.closed.clear()
    async with TestClient(app) as client:
        async with client.websocket_connect("/ws/lobby/41") as ws:
            assert await ws.receive_text() == "hello lobby #42"
            await ws.send_text("one")
            assert await ws.receive_json() == {"room": "lobby", "entries": ["connect", "one"]}
            await ws.close(4000)
        async with client.websocket_connect("/ws/other/1") as ws:
            assert await ws.receive_text() == "hello other #2"
    assert disconnects[0] == (4000, "lobby", True)
    assert len(ConnectionLog.opened) == 2  # one per connection
    assert ConnectionLog.closed == ConnectionLog.opened  # each closed at its end


async def test_function_endpoint_runs_the_whole_connection() -> None:
    app = make_app()

    @app.websocket("/echo/{room}")
    async def echo(ws: WebSocketController, room: str, service: WebSocketService) -> None:
        await ws.accept()
        assert ws.service is service
        async for message in ws:
            await ws.send_text(f"{room}:{message!r}")

    async with TestClient(app) as client, client.websocket_connect("/echo/r") as ws:
        await ws.send_text("a")
        assert await ws.receive_text() == "r:'a'"


class Pairing(WebSocketController):
    """Reads the message after each one itself, in on_message."""

    seen: ClassVar[list[str]]

    async def on_connect(self) -> None:
        await self.accept()

    async def on_message(self, message: str) -> None:
        try:
            second = await self.receive()
        except WebSocketDisconnectError as exc:
            type(self).seen.append(f"closed while waiting ({exc.code} {exc.reason})")
            raise
        await self.send_text(f"{message}+{second!s}")

    async def on_disconnect(self, code: int) -> None:
        type(self).seen.append(f"on_disconnect {code}")


async def test_a_controller_may_read_the_next_message_itself_in_on_message() -> None:
    app = make_app()
    Pairing.seen = []
    app.websocket("/pairs")(Pairing)

    async with TestClient(app) as client:
        async with client.websocket_connect("/pairs") as ws:
            for text in ("a", "b", "c", "d"):
                await ws.send_text(text)
            assert await ws.receive_text() == "a+b"
            assert await ws.receive_text() == "c+d"
            await ws.send_text("e")  # its pair never comes: the client closes
            await ws.close(1000, "bye")
        for _ in range(50):
            if Pairing.seen and Pairing.seen[-1].startswith("on_disconnect"):
                break
            await asyncio.sleep(0.01)
    assert Pairing.seen == ["closed while waiting (1000 bye)", "on_disconnect 1000"]


class Shouting(WebSocketController):
    async def shout(self, text: str) -> None:
        await self.send_text(text.upper())


async def test_function_endpoint_gets_the_controller_subclass_it_asks_for() -> None:
    app = make_app()

    @app.websocket("/shout")
    async def shout(ws: Shouting) -> None:
        await ws.accept()
        await ws.shout("hey")

    async with TestClient(app) as client, client.websocket_connect("/shout") as ws:
        assert await ws.receive_text() == "HEY"
        assert await ws.receive_close() == 1000  # returning closes normally


async def test_function_endpoint_returning_without_accept_refuses() -> None:
    app = make_app()

    @app.websocket("/no")
    async def no(ws: WebSocketController) -> None:
        return None

    async with TestClient(app) as client:
        with pytest.raises(HandshakeRejectedError) as info:
            async with client.websocket_connect("/no"):
                pass
        assert info.value.status == 403


def test_bad_hook_parameters_fail_at_registration() -> None:
    app = make_app()

    class Bad(WebSocketController):
        async def on_message(self, message: str, mystery) -> None:
            pass

    with pytest.raises(ConfigurationError, match="mystery"):
        app.websocket("/bad")(Bad)


@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("receives", "json", "receives"),
        ("max_message_size", 0, "max_message_size"),
        ("rate_limit", 5, "rate_limit"),
        ("message_type", object(), "message_type"),
    ],
)
def test_bad_class_options_fail_at_registration(option: str, value: Any, match: str) -> None:
    cls = type("Configured", (WebSocketController,), {option: value})
    with pytest.raises(ConfigurationError, match=match):
        build_websocket_endpoint(cls, Container(), ())


def test_endpoints_must_be_controllers_or_async_functions() -> None:
    def sync_endpoint(ws: WebSocketController) -> None:
        pass

    with pytest.raises(ConfigurationError, match="async function"):
        build_websocket_endpoint(sync_endpoint, Container(), ())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must subclass WebSocketController"):
        build_websocket_endpoint(dict, Container(), ())  # type: ignore[arg-type]


# --- typed messages ---------------------------------------------------------------------


class Typed(WebSocketController):
    message_type = Inbound

    async def on_message(self, message: Say | Ping) -> None:
        if isinstance(message, Ping):
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "said", "text": message.text})


def typed_app() -> Wirehall:
    app = make_app()
    app.websocket("/typed")(Typed)
    return app


async def test_typed_messages_are_decoded_and_bad_ones_get_an_error_frame() -> None:
    async with TestClient(typed_app()) as client, client.websocket_connect("/typed") as ws:
        await ws.send_json({"type": "say", "text": "hi"})
        assert await ws.receive_json() == {"type": "said", "text": "hi"}
        await ws.send_text("{oops")
        error = await ws.receive_json()
        assert error["type"] == "error"
        assert "malformed" in error["error"]
        await ws.send_json({"type": "say"})
        error = await ws.receive_json()
        assert error == {"type": "error", "error": "Object missing required field `text`"}
        await ws.send_json({"type": "dance"})
        assert "dance" in (await ws.receive_json())["error"]
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
junk_frames = st.one_of(
    st.text(max_size=200),
    json_values.map(lambda value: msgspec.json.encode(value).decode()),
    st.dictionaries(
        st.sampled_from(["type", "text", "extra"]),
        json_values | st.sampled_from(["say", "ping"]),
        max_size=3,
    ).map(lambda value: msgspec.json.encode(value).decode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(junk_frames, min_size=1, max_size=8))
async def test_junk_frames_never_kill_the_connection(frames: list[str]) -> None:
    async with TestClient(typed_app()) as client, client.websocket_connect("/typed") as ws:
        for text in frames:
            await ws.send_text(text)
            reply = await ws.receive_json()  # exactly one answer per frame, never a close
            assert reply["type"] in ("error", "said", "pong")
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json() == {"type": "pong"}


async def test_message_type_any_gives_decoded_json() -> None:
    app = make_app()

    @app.websocket("/any")
    class AnyJSON(WebSocketController):
        message_type = Any

        async def on_message(self, message: Any) -> None:
            await self.send_json({"echo": message})

    async with TestClient(app) as client, client.websocket_connect("/any") as ws:
        await ws.send_text("[1, 2]")
        assert await ws.receive_json() == {"echo": [1, 2]}
        await ws.send_text("nope")
        assert (await ws.receive_json())["type"] == "error"


# --- limits -------------------------------------------------------------------------------


class Echo(WebSocketController):
    async def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.send_text(f"{len(message.encode())}")
        else:
            await self.send_bytes(message)


class EchoAny(Echo):
    receives = "any"


class EchoBytes(Echo):
    receives = "bytes"


def limits_app() -> Wirehall:
    app = make_app()
    app.websocket("/text")(Echo)
    app.websocket("/any")(EchoAny)
    app.websocket("/bytes")(EchoBytes)
    return app


async def test_message_size_is_measured_in_utf8_bytes_and_over_the_limit_closes_1009() -> None:
    async with TestClient(limits_app()) as client:
        async with client.websocket_connect("/text") as ws:
            await ws.send_text("x" * 65536)
            assert await ws.receive_text() == "65536"
            await ws.send_text("é" * 32768)  # 65,536 bytes
            assert await ws.receive_text() == "65536"
            await ws.send_text("é" * 32769)  # fewer characters than the limit, more bytes
            assert await ws.receive_close() == CloseCode.MESSAGE_TOO_BIG
        async with client.websocket_connect("/text") as ws:
            await ws.send_text("x" * 65537)
            assert await ws.receive_close() == CloseCode.MESSAGE_TOO_BIG
        async with client.websocket_connect("/any") as ws:
            await ws.send_bytes(b"\0" * 65537)
            assert await ws.receive_close() == CloseCode.MESSAGE_TOO_BIG


async def test_frames_of_the_other_kind_close_1003() -> None:
    async with TestClient(limits_app()) as client:
        async with client.websocket_connect("/text") as ws:
            await ws.send_bytes(b"bin")
            assert await ws.receive_close() == CloseCode.UNSUPPORTED_DATA
        async with client.websocket_connect("/bytes") as ws:
            await ws.send_bytes(b"bin")
            assert await ws.receive_bytes() == b"bin"
            await ws.send_text("text")
            assert await ws.receive_close() == CloseCode.UNSUPPORTED_DATA
        async with client.websocket_connect("/any") as ws:
            await ws.send_bytes(b"bin")
            assert await ws.receive_bytes() == b"bin"
            await ws.send_text("abc")
            assert await ws.receive_text() == "3"


async def test_rate_limit_sends_error_frames_then_closes_1008() -> None:
    app = make_app()

    @app.websocket("/limited")
    class Limited(WebSocketController):
        rate_limit = RateLimit(per_second=0.001, burst=2, max_violations=2)

        async def on_message(self, message: str) -> None:
            await self.send_json({"type": "ok", "text": message})

    async with TestClient(app) as client, client.websocket_connect("/limited") as ws:
        for n in range(2):
            await ws.send_text(str(n))
            assert await ws.receive_json() == {"type": "ok", "text": str(n)}
        for n in range(2):
            await ws.send_text(f"over {n}")
            error = await ws.receive_json()
            assert error["type"] == "error"
            assert error["error"].startswith("rate limit exceeded")
        await ws.send_text("one too many")
        assert await ws.receive_close() == CloseCode.POLICY_VIOLATION


# --- errors ---------------------------------------------------------------------------------


class Failing(WebSocketController):
    async def on_message(self, message: str) -> None:
        if message == "boom":
            raise LookupError("user code failed")
        if message == "refuse-code":
            raise WebSocketError(4403, "not allowed")
        await self.send_text("fine")


async def test_exception_in_a_hook_closes_1011_logs_and_publishes(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    app.websocket("/fail")(Failing)
    errors: list[ErrorRaised] = []
    app.events.subscribe(ErrorRaised, errors.append)
    async with TestClient(app) as client, client.websocket_connect("/fail") as ws:
        await ws.send_text("ok?")
        assert await ws.receive_text() == "fine"
        with caplog.at_level(logging.ERROR, logger="wirehall.websocket.controller"):
            await ws.send_text("boom")
            assert await ws.receive_close() == CloseCode.INTERNAL_ERROR
    assert len(errors) == 1
    assert isinstance(errors[0].error, LookupError)
    assert errors[0].path == "/fail"
    assert errors[0].kind == "websocket"
    assert any(record.exc_info for record in caplog.records)


async def test_websocket_error_in_a_hook_closes_with_its_code() -> None:
    app = make_app()
    app.websocket("/fail")(Failing)
    async with TestClient(app) as client, client.websocket_connect("/fail") as ws:
        await ws.send_text("refuse-code")
        assert await ws.receive_close() == 4403
        assert ws.close_reason == "not allowed"


async def test_errors_before_accept_refuse_the_handshake(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    @app.websocket("/crash")
    class Crash(WebSocketController):
        async def on_connect(self) -> None:
            raise RuntimeError("on_connect failed")

    @app.websocket("/deny")
    class Deny(WebSocketController):
        async def on_connect(self) -> None:
            raise WebSocketError(CloseCode.POLICY_VIOLATION, "who are you")

    @app.websocket("/undecided")
    class Undecided(WebSocketController):
        async def on_connect(self) -> None:
            pass

    async with TestClient(app) as client:
        with caplog.at_level(logging.CRITICAL, logger="wirehall.websocket.controller"):
            with pytest.raises(HandshakeRejectedError) as info:
                async with client.websocket_connect("/crash"):
                    pass
            assert info.value.status == 500
        with pytest.raises(HandshakeRejectedError) as info:
            async with client.websocket_connect("/deny"):
                pass
        assert info.value.status == 403
        assert info.value.json() == {"error": "who are you"}
        with pytest.raises(HandshakeRejectedError) as info:
            async with client.websocket_connect("/undecided"):
                pass
        assert info.value.status == 403


async def test_requires_auth_refuses_anonymous_handshakes() -> None:
    app = make_app()

    @app.websocket("/private")
    @requires_auth
    class Private(WebSocketController):
        pass

    async with TestClient(app) as client:
        with pytest.raises(HandshakeRejectedError) as info:
            async with client.websocket_connect("/private"):
                pass
        assert info.value.status == 401


async def test_requires_auth_lets_a_signed_in_user_through() -> None:
    @requires_auth(["admin"])
    class Private(WebSocketController):
        async def on_connect(self) -> None:
            await self.accept()
            await self.send_text(f"hi {self.user['name']}")

    endpoint = build_websocket_endpoint(Private, Container(), ())

    async def with_user(scope, receive, send):
        scope["user"] = {"name": "ann", "roles": scope["query_string"].decode().split(",")}
        await endpoint(scope, receive, send)

    async with session(with_user, ws_scope(query_string=b"admin")) as ws:
        assert await ws.receive_text() == "hi ann"
    with pytest.raises(HandshakeRejectedError) as info:
        async with session(with_user, ws_scope(query_string=b"staff")):
            pass
    assert info.value.status == 403


# --- events -------------------------------------------------------------------------------


async def test_lifecycle_events_are_published() -> None:
    app = make_app()
    app.websocket("/echo")(Echo)
    seen: list[object] = []
    app.events.subscribe(WebSocketConnected, seen.append)
    app.events.subscribe(WebSocketDisconnected, seen.append)
    async with TestClient(app) as client, client.websocket_connect("/echo") as ws:
        await ws.send_text("a")
        await ws.receive_text()
        messages: list[WebSocketMessageReceived] = []
        app.events.subscribe(WebSocketMessageReceived, messages.append)
        await ws.send_text("hello")
        await ws.receive_text()
        await ws.close(4001)
    connected, disconnected = seen
    assert isinstance(connected, WebSocketConnected)
    assert isinstance(disconnected, WebSocketDisconnected)
    assert connected.connection_id == disconnected.connection_id
    assert connected.path == "/echo"
    assert disconnected.code == 4001
    assert [(m.path, m.size) for m in messages] == [("/echo", 5)]  # only once subscribed


async def test_runner_works_without_a_wirehall_app() -> None:
    events = EventBus()
    seen: list[object] = []
    events.subscribe(WebSocketConnected, seen.append)
    endpoint = build_websocket_endpoint(Echo, Container(), ())
    async with session(endpoint) as ws:
        await ws.send_text("abc")
        assert await ws.receive_text() == "3"
    assert seen == []  # no app, no bus: nothing to publish on


# --- conveniences and closing ---------------------------------------------------------------


class Member(WebSocketController):
    async def on_connect(self, room: str) -> None:
        await self.accept()
        await self.join(room, self.query.get("user"))

    async def on_message(self, message: str, room: str) -> None:
        if message == "leave":
            await self.leave(room)
            await self.send_json(await self.service.presence(room))
        elif message == "error":
            await self.send_error("something was wrong")
        else:
            await self.service.broadcast(room, message, exclude=[self])


async def presence_is(app: Wirehall, room: str, identities: list[str]) -> bool:
    return sorted((await app.websockets.presence(room)).values()) == identities


async def test_join_leave_send_error_and_rooms_left_on_disconnect() -> None:
    app = make_app()
    app.websocket("/rooms/{room}")(Member)
    async with TestClient(app) as client:
        async with (
            client.websocket_connect("/rooms/a?user=ann") as ann,
            client.websocket_connect("/rooms/a?user=bob") as bob,
        ):
            await eventually(lambda: presence_is(app, "a", ["ann", "bob"]))
            await ann.send_text("hi all")
            assert await bob.receive_text() == "hi all"
            await ann.send_text("error")
            assert await ann.receive_json() == {"type": "error", "error": "something was wrong"}
            await bob.send_text("leave")
            assert list((await bob.receive_json()).values()) == ["ann"]
            await bob.close()
            await ann.close()
        await eventually(lambda: presence_is(app, "a", []))
        assert app.websockets.rooms() == []
        assert app.websockets.connection_count == 0


class Patient(WebSocketController):
    close_timeout = 0.2
    slow_consumer_close_timeout = 0.2
    ended: ClassVar[list[int]] = []

    async def on_connect(self) -> None:
        await self.accept()
        await self.join("patient")

    async def on_disconnect(self, code: int) -> None:
        Patient.ended.append(code)


async def test_a_peer_that_takes_nothing_is_dropped_after_the_close_timeout() -> None:
    Patient.ended.clear()
    events = EventBus()
    service = WebSocketService(events=events, max_queue=2, heartbeat_interval=0)
    await service.start()

    class App:
        websockets = service

    app_object = App()
    endpoint = build_websocket_endpoint(Patient, Container(), ())

    async def app(scope, receive, send):
        scope["app"] = app_object
        app_object.events = events  # type: ignore[attr-defined]
        await endpoint(scope, receive, send)

    async with session(app, buffer=1) as ws:  # the client never reads
        await eventually(lambda: len(service.local_members("patient")) == 1)
        for n in range(10):
            await service.broadcast("patient", f"m{n}")
        await eventually(lambda: bool(Patient.ended), timeout=5.0)
        assert Patient.ended == [CloseCode.TRY_AGAIN_LATER]
        assert service.connection_count == 0
        assert service.local_members("patient") == []
        assert ws is not None
    await service.stop()
