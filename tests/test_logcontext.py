"""The log context: what a log line knows about the request or connection it was written in."""

from __future__ import annotations

import contextvars
import gc
import re
from typing import Any

import pytest

from wirehall import Request, WebSocketController, Wirehall, logcontext
from wirehall.logcontext import LogContext, attach_connection, current_log_context, enter
from wirehall.testing.client import TestClient


def scope(headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "headers": headers or [], **extra}


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    return LogContext("GET", None, headers).request_id


@pytest.mark.parametrize(
    "given",
    [b"abc-123", b"0f8fe2b4-3c8a-4e6e-9d55-3b0f3c1f2a10", b"host.example/42", b"Zm9v+YmFy_x:1", b"a" * 128],
)
def test_a_sane_x_request_id_is_taken(given: bytes) -> None:
    assert request_id_of([(b"accept", b"*/*"), (b"x-request-id", given)]) == given.decode()


@pytest.mark.parametrize(
    "given",
    [b"", b"a" * 129, b"has space", b"token=SECRET", b"line\nbreak", b'quote"d', "caf\u00e9".encode()],
)
def test_an_insane_x_request_id_is_replaced_by_a_random_one(given: bytes) -> None:
    assert re.fullmatch("[0-9a-f]{16}", request_id_of([(b"x-request-id", given)]))


def test_a_request_id_is_made_once_when_first_asked_for() -> None:
    context = LogContext("GET", "/x")
    assert context._request_id is None  # nothing made until a log line asks
    first = context.request_id
    assert re.fullmatch("[0-9a-f]{16}", first)
    assert context.request_id == first
    assert LogContext("GET", "/x").request_id != first


def test_the_context_of_a_request_and_of_a_websocket() -> None:
    def entered(entered_scope: dict[str, Any]) -> LogContext | None:
        enter(entered_scope, "/r")
        return current_log_context()

    request = contextvars.copy_context().run(entered, scope(method="POST"))
    connection = contextvars.copy_context().run(entered, {"type": "websocket", "path": "/ws", "headers": []})
    assert request is not None
    assert connection is not None
    assert (request.method, request.route) == ("POST", "/r")
    assert connection.method == "WEBSOCKET"


def test_enter_and_attach_stay_in_their_own_context() -> None:
    def serve() -> LogContext | None:
        enter(scope(), "/items/{id:int}")
        attach_connection("node.7")
        return current_log_context()

    context = contextvars.copy_context().run(serve)
    assert context is not None
    assert (context.route, context.connection_id) == ("/items/{id:int}", "node.7")
    assert current_log_context() is None  # the caller's context never saw it
    attach_connection("nowhere")  # outside a request: nothing to name, no error


@pytest.fixture
def wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log formatter that reads the context was built (`enable()`), for this test only."""
    monkeypatch.setattr(logcontext, "_wanted", [True])
    assert logcontext.is_enabled()


def context_app() -> tuple[Wirehall, list[LogContext | None]]:
    app = Wirehall(backplane="memory://")
    seen: list[LogContext | None] = []

    @app.get("/orders/{order_id:int}")
    async def order(request: Request) -> dict[str, str]:
        seen.append(current_log_context())
        return {"status": "ok"}

    @app.websocket("/ws/{room}")
    class Room(WebSocketController):
        async def on_message(self, message: str) -> None:
            seen.append(current_log_context())
            await self.send_text(self.id)

    return app, seen


@pytest.mark.usefixtures("websocket_path")
@pytest.mark.usefixtures("wanted")
async def test_a_request_and_a_connection_carry_their_route_and_ids() -> None:
    app, seen = context_app()
    async with TestClient(app) as client:
        response = await client.get("/orders/5", headers={"X-Request-ID": "req-5"})
        assert response.status_code == 200
        async with client.websocket_connect("/ws/lobby") as ws:
            await ws.send_text("hi")
            connection_id = await ws.receive_text()
    request, connection = seen
    assert request is not None
    assert (request.route, request.method, request.request_id) == ("/orders/{order_id:int}", "GET", "req-5")
    assert request.connection_id is None
    assert connection is not None
    assert (connection.route, connection.method) == ("/ws/{room}", "WEBSOCKET")
    assert connection.connection_id == connection_id


async def test_no_context_is_kept_when_no_log_formatter_wants_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logcontext, "_wanted", [False])
    app, seen = context_app()
    async with TestClient(app) as client:
        assert (await client.get("/orders/5")).status_code == 200
    assert seen == [None]


def test_the_context_keeps_no_reference_to_the_scope() -> None:
    # uvicorn keeps a finished request's context until the connection's next request: a
    # scope held that long made the garbage collector run ten times as often under load
    served = scope([(b"x-request-id", b"r-1")])

    def serve() -> LogContext | None:
        enter(served, "/r")
        return current_log_context()

    context = contextvars.copy_context().run(serve)
    assert context is not None
    assert not any(referent is served for referent in gc.get_referents(context))
    assert context.request_id == "r-1"
