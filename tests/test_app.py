"""The application: ASGI entry point, lifespan, services, errors and exception handlers."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall import (
    AppStarted,
    AppStopping,
    Connection,
    Container,
    ErrorRaised,
    Event,
    EventBus,
    Header,
    HTTPController,
    HTTPError,
    Middleware,
    Request,
    RequestCompleted,
    Response,
    WebSocketController,
    Wirehall,
)
from wirehall.errors import ConfigurationError
from wirehall.http.response import JSONResponse, PlainTextResponse, StreamingResponse
from wirehall.testing.client import LifespanError, TestClient
from wirehall.testing.websocket import HandshakeRejectedError
from wirehall.types import ASGIApp, Message, Receive, Scope, Send

from .http._scopes import http_scope


def new_app(**options: Any) -> Wirehall:
    options.setdefault("backplane", "memory://")
    return Wirehall(**options)


class Store:
    def __init__(self) -> None:
        self.items: list[str] = []


class Session:
    pass


class Settings:
    pass


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


class Unit:
    def __init__(self, number: int) -> None:
        self.number = number


async def call(app: ASGIApp, scope: dict[str, Any], body: bytes = b"") -> list[Message]:
    """Run one HTTP request through `app` by hand; returns what it sent."""
    sent: list[Message] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return sent


# ASGI ---------------------------------------------------------------------


async def test_the_app_is_an_asgi3_callable_and_starts_itself_without_lifespan() -> None:
    app = new_app()
    started: list[str] = []
    app.on_startup(lambda: started.append("up"))

    @app.get("/")
    async def home(request: Request) -> dict[str, Any]:
        return {"app_is_self": request.app is app, "scope_app": request.scope["app"] is app}

    assert inspect.iscoroutinefunction(app.__call__)
    assert len(inspect.signature(app.__call__).parameters) == 3
    sent = await call(app, http_scope("/", headers=[("host", "testserver")]))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b'{"app_is_self":true,"scope_app":true}'
    assert started == ["up"]
    await app.shutdown()


async def test_the_lifespan_protocol_by_hand() -> None:
    app = new_app()
    log: list[str] = []
    app.on_startup(lambda: log.append("startup"))
    app.on_shutdown(lambda: log.append("shutdown"))
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.startup.complete"
    assert log == ["startup"]
    await inbox.put({"type": "lifespan.shutdown"})
    assert (await asyncio.wait_for(outbox.get(), 5))["type"] == "lifespan.shutdown.complete"
    await asyncio.wait_for(task, 5)
    assert log == ["startup", "shutdown"]


async def test_startup_failure_is_reported_through_the_lifespan() -> None:
    app = new_app()

    def broken() -> None:
        raise RuntimeError("no config file")

    app.on_startup(broken)
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    message = await asyncio.wait_for(outbox.get(), 5)
    await asyncio.wait_for(task, 5)
    assert message["type"] == "lifespan.startup.failed"
    assert "RuntimeError: no config file" in message["message"]


# lifespan hooks -----------------------------------------------------------


async def test_sync_and_async_hooks_run_in_order() -> None:
    app = new_app()
    log: list[str] = []

    @app.on_startup
    def first() -> None:
        log.append("start 1")

    @app.on_startup
    async def second() -> None:
        await asyncio.sleep(0)
        log.append("start 2")

    @app.on_shutdown
    async def third() -> None:
        log.append("stop 1")

    @app.on_shutdown
    def fourth() -> None:
        log.append("stop 2")

    @app.get("/")
    async def home() -> str:
        log.append("request")
        return "hi"

    async with TestClient(app) as client:
        assert log == ["start 1", "start 2"]
        await client.get("/")
    assert log[:3] == ["start 1", "start 2", "request"]
    assert sorted(log[3:]) == ["stop 1", "stop 2"]


async def test_app_events_around_the_lifespan() -> None:
    app = new_app()
    seen: list[str] = []
    app.events.subscribe(AppStarted, lambda e: seen.append("started"))
    app.events.subscribe(AppStopping, lambda e: seen.append("stopping"))
    async with TestClient(app):
        assert seen == ["started"]
    assert seen == ["started", "stopping"]


async def test_the_apps_own_objects_can_be_injected() -> None:
    app = new_app()

    @app.get("/")
    async def home(a: Wirehall, c: Container, bus: EventBus) -> dict[str, bool]:
        return {"app": a is app, "container": c is app.container, "bus": bus is app.events}

    async with TestClient(app) as client:
        assert (await client.get("/")).json() == {"app": True, "container": True, "bus": True}


# services ------------------------------------------------------------------


async def test_singletons_are_built_at_startup_and_torn_down_after_shutdown_hooks() -> None:
    app = new_app()
    log: list[str] = []

    async def open_store() -> AsyncIterator[Store]:
        log.append("store open")
        yield Store()
        log.append("store closed")

    app.container.singleton(Store, open_store)
    app.on_startup(lambda: log.append("startup hook"))
    app.on_shutdown(lambda: log.append("shutdown hook"))

    @app.get("/items")
    async def items(store: Store) -> list[str]:
        store.items.append("x")
        return store.items

    async with TestClient(app) as client:
        assert log == ["store open", "startup hook"]
        assert (await client.get("/items")).json() == ["x"]
        assert (await client.get("/items")).json() == ["x", "x"]
        assert log == ["store open", "startup hook"]
    assert log == ["store open", "startup hook", "shutdown hook", "store closed"]


async def test_startup_hooks_can_ask_nothing_but_see_built_singletons() -> None:
    app = new_app()
    app.container.singleton(Store)
    seen: list[Store] = []

    @app.on_startup
    async def warm() -> None:
        seen.append(await app.container.get(Store))

    @app.get("/")
    async def home(store: Store) -> dict[str, bool]:
        return {"same": store is seen[0]}

    async with TestClient(app) as client:
        assert (await client.get("/")).json() == {"same": True}


async def test_a_broken_singleton_fails_startup_with_its_error() -> None:
    app = new_app()

    def connect() -> Database:
        raise RuntimeError("database unreachable at db:5432")

    app.container.singleton(Settings)
    app.container.singleton(Database, connect)
    with pytest.raises(LifespanError, match="database unreachable at db:5432"):
        async with TestClient(app):
            pass


async def test_a_broken_singleton_failure_names_the_service() -> None:
    app = new_app()

    def connect() -> Database:
        raise RuntimeError("connection refused")

    app.container.singleton(Database, connect)
    with pytest.raises(LifespanError, match="Database"):
        async with TestClient(app):
            pass


async def test_a_failed_startup_closes_what_it_had_opened() -> None:
    app = new_app()
    log: list[str] = []

    async def open_store() -> AsyncIterator[Store]:
        log.append("store open")
        yield Store()
        log.append("store closed")

    def broken_hook() -> None:
        raise RuntimeError("migration failed")

    app.container.singleton(Store, open_store)
    app.on_startup(broken_hook)
    with pytest.raises(LifespanError, match="migration failed"):
        async with TestClient(app):
            pass
    assert log == ["store open", "store closed"]


async def test_an_unregistered_dependency_fails_startup_not_the_first_request() -> None:
    app = new_app()

    @app.get("/")
    async def home(store: Store) -> str:
        return "never"

    with pytest.raises(LifespanError, match=r"needs Store, which is not registered"):
        async with TestClient(app):
            pass


async def test_an_unresolvable_parameter_fails_at_registration() -> None:
    app = new_app()

    async def home(mystery) -> str:
        return "never"

    with pytest.raises(ConfigurationError, match=r"'mystery'.*not a path parameter"):
        app.get("/")(home)
    with pytest.raises(ConfigurationError, match=r"'mystery'"):
        app.get("/rooms/{room}")(home)


async def test_factories_get_their_own_dependencies() -> None:
    app = new_app()
    app.container.singleton(Settings)
    app.container.singleton(Database)

    @app.get("/")
    async def home(db: Database, settings: Settings) -> dict[str, bool]:
        return {"same": db.settings is settings}

    async with TestClient(app) as client:
        assert (await client.get("/")).json() == {"same": True}


async def test_scoped_values_are_shared_within_a_request_and_torn_down_at_its_end() -> None:
    app = new_app()
    log: list[str] = []
    counter = iter(range(100))

    async def open_session() -> AsyncIterator[Session]:
        number = next(counter)
        log.append(f"open {number}")
        session = Session()
        session.number = number  # type: ignore[attr-defined]
        yield session
        log.append(f"close {number}")

    def make_unit(session: Session) -> Unit:
        return Unit(session.number)  # type: ignore[attr-defined]

    app.container.scoped(Session, open_session)
    app.container.transient(Unit, make_unit)

    @app.get("/")
    async def home(session: Session, unit: Unit, again: Unit) -> dict[str, Any]:
        log.append("handler")
        return {
            "session": session.number,  # type: ignore[attr-defined]
            "unit": unit.number,
            "fresh_units": unit is not again,
        }

    async with TestClient(app) as client:
        first = (await client.get("/")).json()
        assert log == ["open 0", "handler", "close 0"]
        second = (await client.get("/")).json()
    assert first == {"session": 0, "unit": 0, "fresh_units": True}
    assert second == {"session": 1, "unit": 1, "fresh_units": True}
    assert log == ["open 0", "handler", "close 0", "open 1", "handler", "close 1"]


async def test_scoped_teardown_runs_when_the_endpoint_raises() -> None:
    app = new_app()
    log: list[str] = []

    async def open_session() -> AsyncIterator[Session]:
        log.append("open")
        yield Session()
        log.append("close")

    app.container.scoped(Session, open_session)

    @app.get("/")
    async def home(session: Session) -> str:
        raise HTTPError(409, "conflict")

    async with TestClient(app) as client:
        response = await client.get("/")
    assert response.status_code == 409
    assert log == ["open", "close"]


async def test_container_override_for_tests() -> None:
    app = new_app()
    app.container.singleton(Store)

    @app.get("/")
    async def home(store: Store) -> list[str]:
        return store.items

    fake = Store()
    fake.items.append("fake")
    async with TestClient(app) as client:
        with app.container.override(Store, fake):
            assert (await client.get("/")).json() == ["fake"]
        assert (await client.get("/")).json() == []


# errors --------------------------------------------------------------------


async def test_an_unhandled_error_is_a_500_without_a_traceback_logged_and_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = new_app(debug=False)
    errors: list[ErrorRaised] = []
    app.events.subscribe(ErrorRaised, errors.append)

    @app.get("/boom")
    async def boom() -> str:
        raise ValueError("secret connection string")

    with caplog.at_level(logging.ERROR, logger="wirehall"):
        async with TestClient(app) as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Internal Server Error"}
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    records = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(records) == 1
    assert isinstance(records[0].exc_info[1], ValueError)  # type: ignore[index]
    assert "secret connection string" in caplog.text
    assert "Traceback" in caplog.text
    assert len(errors) == 1
    assert isinstance(errors[0].error, ValueError)
    assert (errors[0].path, errors[0].kind) == ("/boom", "http")


async def test_debug_puts_the_traceback_in_the_500(caplog: pytest.LogCaptureFixture) -> None:
    app = new_app(debug=True)

    @app.get("/boom")
    async def boom() -> str:
        raise ValueError("visible in debug")

    with caplog.at_level(logging.CRITICAL):
        async with TestClient(app) as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    detail = response.json()["error"]
    assert "Traceback" in detail
    assert "ValueError: visible in debug" in detail


async def test_debug_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHALL_DEBUG", "1")
    assert new_app().debug is True
    assert new_app(debug=False).debug is False
    monkeypatch.setenv("WIREHALL_DEBUG", "0")
    assert new_app().debug is False


async def test_http_error_becomes_its_response_and_is_not_logged_as_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = new_app()
    errors: list[ErrorRaised] = []
    app.events.subscribe(ErrorRaised, errors.append)

    @app.get("/limited")
    async def limited() -> str:
        raise HTTPError(429, "slow down", headers={"Retry-After": "3"})

    with caplog.at_level(logging.ERROR):
        async with TestClient(app) as client:
            response = await client.get("/limited")
    assert response.status_code == 429
    assert response.json() == {"error": "slow down"}
    assert response.headers["retry-after"] == "3"
    assert errors == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class PaymentError(Exception):
    pass


class CardDeclinedError(PaymentError):
    pass


async def test_exception_handlers_match_by_class_and_base_class() -> None:
    app = new_app()

    @app.exception_handler(PaymentError)
    async def payment_failed(request: Request, exc: PaymentError) -> Response:
        return JSONResponse({"payment": str(exc), "path": request.path}, status=402)

    @app.exception_handler(KeyError)
    def missing(request: Request, exc: KeyError) -> Response:
        return PlainTextResponse("missing key", status=404)

    @app.get("/pay")
    async def pay() -> str:
        raise CardDeclinedError("declined")

    @app.get("/lookup")
    async def lookup() -> str:
        raise KeyError("x")

    async with TestClient(app) as client:
        paid = await client.get("/pay")
        looked = await client.get("/lookup")
    assert paid.status_code == 402
    assert paid.json() == {"payment": "declined", "path": "/pay"}
    assert looked.status_code == 404
    assert looked.text == "missing key"


async def test_an_exception_handler_can_answer_http_errors() -> None:
    app = new_app()

    @app.exception_handler(HTTPError)
    def as_text(request: Request, exc: HTTPError) -> Response:
        return PlainTextResponse(f"custom {exc.status}", status=exc.status)

    @app.get("/gone")
    async def gone() -> str:
        raise HTTPError(410)

    async with TestClient(app) as client:
        response = await client.get("/gone")
    assert (response.status_code, response.text) == (410, "custom 410")


async def test_a_failing_exception_handler_gives_a_500(caplog: pytest.LogCaptureFixture) -> None:
    app = new_app()

    @app.exception_handler(PaymentError)
    def broken(request: Request, exc: PaymentError) -> Response:
        raise RuntimeError("handler bug")

    @app.get("/pay")
    async def pay() -> str:
        raise PaymentError("x")

    with caplog.at_level(logging.CRITICAL):
        async with TestClient(app) as client:
            response = await client.get("/pay")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}


async def test_an_error_after_the_response_started_is_logged_and_the_app_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = new_app()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("stream broke")

    @app.get("/stream")
    async def stream() -> Response:
        return StreamingResponse(chunks(), media_type="text/plain")

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        # like uvicorn: a second response start is a protocol error
        if message["type"] == "http.response.start" and any(m["type"] == "http.response.start" for m in sent):
            raise RuntimeError("Unexpected ASGI message 'http.response.start' sent")
        sent.append(message)

    with caplog.at_level(logging.ERROR, logger="wirehall"):
        await asyncio.wait_for(
            app(http_scope("/stream", headers=[("host", "testserver")]), receive, send), timeout=5
        )
    await app.shutdown()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["body"] == b"partial"
    assert sent[1]["more_body"] is True
    assert "stream broke" in caplog.text


async def test_max_body_size_is_the_apps_setting() -> None:
    app = new_app(max_body_size=10)

    @app.post("/")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async with TestClient(app) as client:
        assert (await client.post("/", content=b"x" * 10)).json() == {"size": 10}
        too_big = await client.post("/", content=b"x" * 11)
    assert too_big.status_code == 413
    assert "error" in too_big.json()


# middleware ----------------------------------------------------------------


def tagging(app: ASGIApp, tag: str) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message["headers"], (b"x-order", tag.encode())]
            await send(message)

        await app(scope, receive, tagged)

    return middleware


async def test_middleware_wraps_the_app_outermost_first() -> None:
    app = new_app(middleware=[Middleware(tagging, tag="outer"), Middleware(tagging, tag="inner")])
    app.add_middleware(tagging, tag="added")

    @app.get("/")
    async def home() -> str:
        return "hi"

    async with TestClient(app) as client:
        response = await client.get("/")
    # the innermost middleware adds its header first
    assert response.headers.get_list("x-order") == ["inner", "outer", "added"]


async def test_middleware_cannot_be_added_once_serving() -> None:
    app = new_app()
    async with TestClient(app):
        with pytest.raises(ConfigurationError, match="once the app has started"):
            app.add_middleware(tagging, tag="late")


async def test_security_headers_are_on_by_default_and_can_be_turned_off() -> None:
    for enabled in (True, False):
        app = new_app(security_headers=enabled)

        @app.get("/")
        async def home() -> str:
            return "hi"

        async with TestClient(app) as client:
            response = await client.get("/")
        assert ("x-content-type-options" in response.headers) is enabled


async def test_custom_events_can_be_published_from_endpoints() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class ItemAdded(Event):
        name: str

    app = new_app()
    seen: list[ItemAdded] = []
    app.events.subscribe(ItemAdded, seen.append)

    @app.post("/items/{name}")
    async def add(name: str, bus: EventBus) -> tuple[str, int]:
        await bus.publish(ItemAdded(name))
        return name, 201

    async with TestClient(app) as client:
        response = await client.post("/items/pen")
    assert response.status_code == 201
    assert seen == [ItemAdded("pen")]


# --- request-aware dependencies, typed answers, the matched route -----------------------------


class CurrentUser:
    """Who is asking: built from the request's Authorization header, once per request."""

    built: ClassVar[list[str]] = []
    closed: ClassVar[list[str]] = []

    def __init__(self, name: str) -> None:
        self.name = name


async def current_user(
    connection: Connection, token: Annotated[str, Header("authorization")]
) -> AsyncIterator[CurrentUser]:
    if not token.startswith("user "):
        raise HTTPError(401, "send Authorization: user NAME")
    user = CurrentUser(token.removeprefix("user "))
    CurrentUser.built.append(f"{user.name}@{connection.url.path}")
    yield user
    CurrentUser.closed.append(user.name)


class Greeting:
    def __init__(self, user: CurrentUser, room: str, shout: bool = False) -> None:
        self.text = f"hello {user.name} in {room}" + ("!" if shout else "")


@pytest.fixture
def users() -> None:
    CurrentUser.built.clear()
    CurrentUser.closed.clear()


def user_app() -> Wirehall:
    app = new_app()
    app.container.scoped(CurrentUser, current_user)
    app.container.scoped(Greeting)

    @app.get("/rooms/{room}")
    async def greet(greeting: Greeting, user: CurrentUser) -> dict[str, str]:
        return {"text": greeting.text, "user": user.name}

    @app.route("/me")
    class Me(HTTPController):
        async def get(self, user: CurrentUser) -> dict[str, str]:
            return {"user": user.name}

    @app.websocket("/ws/{room}")
    class Chat(WebSocketController):
        async def on_connect(self, user: CurrentUser, greeting: Greeting) -> None:
            await self.accept()
            await self.send_json({"text": greeting.text})

        async def on_message(self, message: str, user: CurrentUser) -> None:
            await self.send_json({"from": user.name, "text": message})

    return app


async def test_a_dependency_takes_the_request_a_header_and_a_path_value_once_per_request(users: None) -> None:
    async with TestClient(user_app()) as client:
        response = await client.get("/rooms/lobby?shout=true", headers={"authorization": "user ann"})
        assert response.json() == {"text": "hello ann in lobby!", "user": "ann"}
        assert CurrentUser.built == ["ann@/rooms/lobby"]  # Greeting and the endpoint share one
        assert CurrentUser.closed == ["ann"]  # the async generator's cleanup ran after the response
        assert (await client.get("/me", headers={"authorization": "user bob"})).json() == {"user": "bob"}
        refused = await client.get("/me", headers={"authorization": "nobody"})
        missing = await client.get("/me")
    assert refused.status_code == 401
    assert missing.status_code == 422
    assert missing.json()["detail"] == [{"loc": ["header", "authorization"], "msg": "field required"}]


@pytest.mark.usefixtures("websocket_path")
async def test_the_same_dependency_serves_a_websocket_once_per_connection(users: None) -> None:
    async with TestClient(user_app()) as client:
        async with client.websocket_connect("/ws/lobby", headers={"authorization": "user cy"}) as ws:
            assert await ws.receive_json() == {"text": "hello cy in lobby"}
            for text in ("a", "b"):
                await ws.send_text(text)
                assert await ws.receive_json() == {"from": "cy", "text": text}
            assert CurrentUser.built == ["cy@/ws/lobby"]
        with pytest.raises(HandshakeRejectedError) as refused:
            async with client.websocket_connect("/ws/lobby"):
                pass
    assert refused.value.status == 403
    assert CurrentUser.closed == ["cy"]


async def test_overrides_replace_a_request_aware_dependency(users: None) -> None:
    app = user_app()
    with app.container.override(CurrentUser, CurrentUser("tester")):
        async with TestClient(app) as client:
            assert (await client.get("/me")).json() == {"user": "tester"}
    assert CurrentUser.built == []


async def test_a_factory_taking_request_is_refused_for_a_websocket_route_at_startup() -> None:
    app = new_app()

    def from_request(request: Request) -> CurrentUser:
        return CurrentUser(request.headers.get("x-user", ""))

    app.container.scoped(CurrentUser, from_request)

    @app.websocket("/ws")
    class Chat(WebSocketController):
        async def on_connect(self, user: CurrentUser) -> None:
            await self.accept()

    with pytest.raises(ConfigurationError, match="take Connection"):
        await app.startup()


async def test_a_singleton_taking_the_request_is_refused_at_startup() -> None:
    app2 = new_app()

    def from_request(request: Request) -> CurrentUser:
        return CurrentUser("x")

    app2.container.singleton(CurrentUser, from_request)
    with pytest.raises(ConfigurationError, match="scoped"):
        await app2.startup()


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents


async def test_json_enc_hook_encodes_what_msgspec_cannot() -> None:
    app = new_app(json_enc_hook=lambda obj: f"{obj.cents / 100:.2f}" if isinstance(obj, Money) else obj)

    @app.get("/price", status_code=202)
    async def price() -> dict[str, Money]:
        return {"price": Money(150)}

    async with TestClient(app) as client:
        response = await client.get("/price")
    assert (response.status_code, response.json()) == (202, {"price": "1.50"})


async def test_an_unencodable_return_is_a_logged_500_naming_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    app = new_app()

    @app.get("/price")
    async def price() -> Money:
        return Money(150)

    async with TestClient(app) as client:
        response = await client.get("/price")
    assert response.status_code == 500
    assert "cannot encode the Money the endpoint returned" in caplog.text
    assert "json_enc_hook" in caplog.text


async def test_status_code_applies_to_returned_values_only() -> None:
    app = new_app()

    @app.post("/made", status_code=201)
    async def made(kind: str = "dict") -> Any:
        if kind == "none":
            return None
        if kind == "response":
            return PlainTextResponse("as is", 200)
        return {"ok": True}

    async with TestClient(app) as client:
        assert (await client.post("/made")).status_code == 201
        assert (await client.post("/made?kind=none")).status_code == 201
        assert (await client.post("/made?kind=response")).status_code == 200


def test_a_status_code_outside_http_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="status_code"):
        new_app().get("/x", status_code=42)


async def test_the_matched_route_is_in_the_scope_and_in_request_completed() -> None:
    app = new_app()
    seen: list[Any] = []
    completed: list[RequestCompleted] = []
    app.events.subscribe(RequestCompleted, completed.append)

    @app.get("/items/{item_id:int}")
    async def item(request: Request, item_id: int) -> dict[str, int]:
        seen.append(request.scope["route"])
        return {"id": item_id}

    async with TestClient(app) as client:
        await client.get("/items/3")
        await client.get("/nowhere")
    (route,) = seen
    assert (route.path, route.path_format, route.method, route.name) == (
        "/items/{item_id:int}",
        "/items/{item_id:int}",
        "GET",
        "item",
    )
    assert [(event.path, event.route) for event in completed] == [
        ("/items/3", "/items/{item_id:int}"),
        ("/nowhere", None),
    ]


# parameterless endpoints on paths without parameters: run by `__call__` itself ---------------


def hello_app(**options: Any) -> tuple[Wirehall, list[int]]:
    """An app whose `GET /` answers "hi" from a parameterless endpoint, and its startups."""
    app = new_app(**options)
    starts: list[int] = []
    app.on_startup(lambda: starts.append(1))

    @app.get("/")
    async def home() -> str:
        return "hi"

    return app, starts


async def test_the_shortcut_still_puts_the_route_in_the_scope() -> None:
    app, _ = hello_app()

    await app.startup()
    try:
        scopes = [http_scope("/") for _ in range(2)]  # both take the shortcut, built at startup
        for scope in scopes:
            messages = await call(app, scope)
            assert messages[-1]["body"] == b"hi"
        assert [(scope["route"].path, scope["path_params"]) for scope in scopes] == [("/", {})] * 2
    finally:
        await app.shutdown()


async def test_requests_are_observed_from_the_moment_a_subscription_is_made() -> None:
    app, _ = hello_app()

    completed: list[RequestCompleted] = []
    async with TestClient(app) as client:
        for _ in range(2):  # nobody listens: the shortcut, built at startup
            assert (await client.get("/")).text == "hi"
        assert "/" in app._inline
        app.events.subscribe(RequestCompleted, completed.append)
        assert (await client.get("/")).text == "hi"
        app.events.unsubscribe(RequestCompleted, completed.append)
        for _ in range(2):
            assert (await client.get("/")).text == "hi"
        assert "/" in app._inline
        app.events.subscribe(RequestCompleted, completed.append)
        await client.get("/")
    assert [(event.path, event.route, event.status) for event in completed] == [("/", "/", 200)] * 2


def test_the_event_bus_is_the_apps_for_its_whole_life() -> None:
    app = new_app()
    with pytest.raises(AttributeError):
        app.events = EventBus()  # type: ignore[misc]


async def test_a_request_after_shutdown_starts_the_app_again() -> None:
    app, starts = hello_app()

    for _ in range(2):
        for _ in range(2):  # the second request takes the shortcut
            assert (await call(app, http_scope("/")))[-1]["body"] == b"hi"
        await app.shutdown()
    assert starts == [1, 1]


async def test_the_shortcut_makes_the_apps_host_check_first() -> None:
    app, _ = hello_app(allowed_hosts=["example.com"])

    await app.startup()
    try:
        for _ in range(2):  # the shortcut, built at startup
            answer = await call(app, http_scope("/", headers=[("host", "example.com")]))
            assert answer[-1]["body"] == b"hi"
        assert "/" in app._inline
        refused = await call(app, http_scope("/", headers=[("host", "evil.example")]))
        assert refused[0]["status"] == 400
        assert refused[-1]["body"] == b'{"error":"invalid Host header"}'
        missing = await call(app, http_scope("/"))  # no Host at all
        assert missing[0]["status"] == 400
    finally:
        await app.shutdown()


async def test_middleware_of_the_apps_own_sees_every_request() -> None:
    app, _ = hello_app(allowed_hosts=["example.com"], middleware=[Middleware(tagging, tag="seen")])

    await app.startup()
    try:
        for _ in range(3):
            answer = await call(app, http_scope("/", headers=[("host", "example.com")]))
            assert (b"x-order", b"seen") in answer[0]["headers"]
        assert app._inline == {}
    finally:
        await app.shutdown()


_STEPS = st.lists(
    st.sampled_from(["get", "head", "subscribe", "unsubscribe", "shutdown", "startup"]), max_size=25
)


@settings(max_examples=120, deadline=None)
@given(steps=_STEPS)
def test_any_sequence_of_requests_subscriptions_and_restarts_is_observed_exactly(steps: list[str]) -> None:
    """Whatever the order, every request made while somebody listens is published, no other
    one is, and every answer is the endpoint's: the shortcut never outlives what it assumed."""
    app, starts = hello_app()

    completed: list[RequestCompleted] = []

    async def run() -> int:
        listening = False
        expected = 0
        for step in steps:
            if step in ("get", "head"):
                method = step.upper()
                messages = await call(app, http_scope("/", method=method))
                assert messages[0]["status"] == 200
                assert messages[-1]["body"] == (b"hi" if method == "GET" else b"")
                expected += listening
            elif step == "subscribe" and not listening:
                app.events.subscribe(RequestCompleted, completed.append)
                listening = True
            elif step == "unsubscribe" and listening:
                app.events.unsubscribe(RequestCompleted, completed.append)
                listening = False
            elif step == "shutdown":
                await app.shutdown()
            elif step == "startup":
                await app.startup()
        await app.shutdown()
        return expected

    expected = asyncio.run(run())
    assert len(completed) == expected
    assert all((event.route, event.status) == ("/", 200) for event in completed)
    # the app started once per stretch between shutdowns with a request or a startup in it
    stretches: list[set[str]] = [set()]
    for step in steps:
        if step == "shutdown":
            stretches.append(set())
        else:
            stretches[-1].add(step)
    assert len(starts) == sum(1 for stretch in stretches if stretch & {"get", "head", "startup"})
