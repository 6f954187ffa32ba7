from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from wirehall import HTTPController, HTTPError, Request, Response, Wirehall
from wirehall.errors import ConfigurationError
from wirehall.http.controller import controller_methods, to_response
from wirehall.http.response import JSONResponse, PlainTextResponse
from wirehall.testing.client import TestClient


class Item(msgspec.Struct):
    name: str
    price: float


@dataclasses.dataclass
class Note:
    text: str


class Store:
    def __init__(self) -> None:
        self.rooms: dict[str, list[str]] = {"lobby": ["hello"]}


class Audit:
    """Scoped: one per request."""

    def __init__(self) -> None:
        self.entries: list[str] = []


def new_app(tmp_path: Path | None = None) -> Wirehall:
    app = Wirehall(backplane="memory://")
    app.container.singleton(Store)
    app.container.scoped(Audit)

    @app.route("/rooms/{room}/messages")
    class Messages(HTTPController):
        async def get(self, room: str, store: Store) -> dict[str, Any]:
            if room not in store.rooms:
                raise HTTPError(404, f"no room {room!r}")
            return {"room": room, "messages": store.rooms[room]}

        async def post(self, room: str, store: Store, audit: Audit, again: Audit) -> Response:
            data = await self.request.json()
            store.rooms.setdefault(room, []).append(data["text"])
            audit.entries.append("posted")
            return self.send_json({"stored": data["text"], "same_audit": audit is again}, status=201)

        async def delete(self, room: str, store: Store) -> None:
            store.rooms.pop(room, None)

    @app.route("/helpers/{kind}")
    class Helpers(HTTPController):
        async def get(self, kind: str) -> Response | None:
            if kind == "text":
                return self.send_text("plain", headers={"X-Kind": "text"})
            if kind == "html":
                return self.send_html("<h1>hi</h1>", status=202)
            if kind == "redirect":
                return self.send_redirect("/helpers/text")
            if kind == "error":
                return self.send_error(409, "conflict here")
            if kind == "file" and tmp_path is not None:
                return self.send_file(tmp_path / "report.csv", filename="report.csv")
            if kind == "unreturned":
                self.send_text("sent without return")
                return None
            raise HTTPError(400, f"unknown kind {kind!r}")

    @app.route("/returns/{kind}")
    class Returns(HTTPController):
        async def get(self, kind: str) -> Any:
            values: dict[str, Any] = {
                "dict": {"a": 1},
                "list": [1, 2],
                "struct": Item("pen", 1.5),
                "dataclass": Note("hi"),
                "str": "text body",
                "bytes": b"\x00raw",
                "none": None,
                "tuple": ({"created": True}, 201),
                "text_tuple": ("accepted", 202),
                "response": PlainTextResponse("as is", status=203),
                "int": 7,
            }
            return values[kind]

    @app.route("/context")
    class Context(HTTPController):
        async def get(self) -> dict[str, Any]:
            self.state.visited = True  # State lacks __setattr__ for mypy
            return {
                "path_params": self.path_params,
                "query": self.query.getlist("q"),
                "header": self.headers.get("x-test"),
                "cookie": self.cookies.get("c"),
                "url": str(self.url),
                "client": self.client.host if self.client else None,
                "state": "visited" in self.state,
                "session": self.session,
                "user": self.user,
                "request_is_request": isinstance(self.request, Request),
            }

    return app


async def test_class_endpoint_methods_with_path_params_and_dependencies() -> None:
    app = new_app()
    async with TestClient(app) as client:
        assert (await client.get("/rooms/lobby/messages")).json() == {"room": "lobby", "messages": ["hello"]}
        posted = await client.post("/rooms/lobby/messages", json={"text": "second"})
        assert posted.status_code == 201
        assert posted.json() == {"stored": "second", "same_audit": True}
        assert (await client.get("/rooms/lobby/messages")).json()["messages"] == ["hello", "second"]
        missing = await client.get("/rooms/attic/messages")
        assert missing.status_code == 404
        assert missing.json() == {"error": "no room 'attic'"}
        deleted = await client.delete("/rooms/lobby/messages")
        assert deleted.status_code == 204
        assert deleted.content == b""
        assert (await client.get("/rooms/lobby/messages")).status_code == 404
        not_allowed = await client.put("/rooms/lobby/messages")
        assert not_allowed.status_code == 405
        assert not_allowed.headers["allow"] == "DELETE, GET, HEAD, POST"


async def test_bad_json_in_a_controller_is_a_400() -> None:
    app = new_app()
    async with TestClient(app) as client:
        response = await client.post("/rooms/lobby/messages", content=b"{nope")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


async def test_send_helpers(tmp_path: Path) -> None:
    (tmp_path / "report.csv").write_text("a,b\n1,2\n")
    app = new_app(tmp_path)
    async with TestClient(app) as client:
        text = await client.get("/helpers/text")
        html = await client.get("/helpers/html")
        redirect = await client.get("/helpers/redirect", follow_redirects=False)
        followed = await client.get("/helpers/redirect", follow_redirects=True)
        error = await client.get("/helpers/error")
        file = await client.get("/helpers/file")
        unreturned = await client.get("/helpers/unreturned")
    assert (text.text, text.headers["content-type"], text.headers["x-kind"]) == (
        "plain",
        "text/plain; charset=utf-8",
        "text",
    )
    assert (html.status_code, html.text, html.headers["content-type"]) == (
        202,
        "<h1>hi</h1>",
        "text/html; charset=utf-8",
    )
    assert (redirect.status_code, redirect.headers["location"]) == (303, "/helpers/text")
    assert followed.text == "plain"
    assert (error.status_code, error.json()) == (409, {"error": "conflict here"})
    assert file.content == b"a,b\n1,2\n"
    assert file.headers["content-type"].startswith("text/csv")
    assert "report.csv" in file.headers["content-disposition"]
    assert "etag" in file.headers
    assert (unreturned.status_code, unreturned.text) == (200, "sent without return")


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body"),
    [
        ("dict", 200, "application/json", b'{"a":1}'),
        ("list", 200, "application/json", b"[1,2]"),
        ("struct", 200, "application/json", b'{"name":"pen","price":1.5}'),
        ("dataclass", 200, "application/json", b'{"text":"hi"}'),
        ("str", 200, "text/plain; charset=utf-8", b"text body"),
        ("bytes", 200, "application/octet-stream", b"\x00raw"),
        ("none", 204, None, b""),
        ("tuple", 201, "application/json", b'{"created":true}'),
        ("text_tuple", 202, "text/plain; charset=utf-8", b"accepted"),
        ("response", 203, "text/plain; charset=utf-8", b"as is"),
        ("int", 200, "application/json", b"7"),
    ],
)
async def test_return_values_become_responses(
    kind: str, status: int, content_type: str | None, body: bytes
) -> None:
    app = new_app()
    async with TestClient(app) as client:
        response = await client.get(f"/returns/{kind}")
    assert response.status_code == status
    assert response.headers.get("content-type") == content_type
    assert response.content == body


async def test_controller_sees_the_request_under_the_connection_names() -> None:
    app = new_app()
    async with TestClient(app) as client:
        response = await client.get("/context?q=1&q=2", headers={"X-Test": "yes", "Cookie": "c=v"})
    assert response.json() == {
        "path_params": {},
        "query": ["1", "2"],
        "header": "yes",
        "cookie": "v",
        "url": "http://testserver/context?q=1&q=2",
        "client": "127.0.0.1",
        "state": True,
        "session": {},
        "user": None,
        "request_is_request": True,
    }


async def test_function_endpoints_return_values_and_status_tuples() -> None:
    app = Wirehall(backplane="memory://")

    @app.post("/items")
    async def create(request: Request) -> tuple[Item, int]:
        return await request.json_as(Item), 201

    @app.get("/nothing")
    async def nothing() -> None:
        return None

    async with TestClient(app) as client:
        created = await client.post("/items", json={"name": "pen", "price": 2})
        empty = await client.get("/nothing")
    assert created.status_code == 201
    assert created.json() == {"name": "pen", "price": 2.0}
    assert (empty.status_code, empty.content) == (204, b"")


async def test_an_unencodable_return_value_is_a_500_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    app = Wirehall(backplane="memory://")

    @app.get("/weird")
    async def weird() -> Any:
        return {"x": object()}

    async with TestClient(app) as client:
        response = await client.get("/weird")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}
    assert "cannot encode" in caplog.text


def test_controller_without_methods_is_refused() -> None:
    class Empty(HTTPController):
        pass

    with pytest.raises(ConfigurationError, match="defines none of get/post"):
        controller_methods(Empty)
    app = Wirehall(backplane="memory://")
    with pytest.raises(ConfigurationError, match="Empty"):
        app.route("/empty")(Empty)


def test_controller_methods_in_order() -> None:
    class Some(HTTPController):
        async def post(self) -> None: ...

        async def get(self) -> None: ...

    assert controller_methods(Some) == ["GET", "POST"]


async def test_a_controller_route_can_be_limited_to_some_methods() -> None:
    app = Wirehall(backplane="memory://")

    @app.route("/limited", methods=["GET"])
    class Limited(HTTPController):
        async def get(self) -> str:
            return "get"

        async def post(self) -> str:
            return "post"

    async with TestClient(app) as client:
        assert (await client.get("/limited")).text == "get"
        assert (await client.post("/limited")).status_code == 405


def test_controller_method_with_an_unresolvable_parameter_is_refused_at_registration() -> None:
    app = Wirehall(backplane="memory://")

    class Broken(HTTPController):
        async def get(self, mystery) -> str:
            return "x"

    with pytest.raises(ConfigurationError, match="'mystery'"):
        app.route("/broken")(Broken)


async def test_scoped_teardown_runs_after_a_controller_request() -> None:
    app = Wirehall(backplane="memory://")
    log: list[str] = []

    async def open_audit() -> AsyncIterator[Audit]:
        log.append("open")
        yield Audit()
        log.append("close")

    app.container.scoped(Audit, open_audit)

    @app.route("/audited")
    class Audited(HTTPController):
        async def get(self, audit: Audit) -> str:
            log.append("handler")
            return "ok"

    async with TestClient(app) as client:
        await client.get("/audited")
        await client.get("/audited")
    assert log == ["open", "handler", "close"] * 2


def test_to_response_directly() -> None:
    assert to_response("x").body == b"x"
    assert isinstance(to_response({"a": 1}), JSONResponse)
    response = PlainTextResponse("same")
    assert to_response(response) is response
    assert to_response(None).status == 204
    assert to_response(([1], 201)).status == 201
    with pytest.raises(TypeError):
        to_response(object())
