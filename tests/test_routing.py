"""Path compiling and matching: on the Router itself, then through the app."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from wirehall import HTTPController, Mount, Request, Route, WebSocketRoute, Wirehall
from wirehall.errors import ConfigurationError
from wirehall.routing import Router, compile_path
from wirehall.testing.client import TestClient
from wirehall.types import Message, Receive, Scope, Send


async def handler_a(scope: Scope, receive: Receive, send: Send) -> None:
    pass


async def handler_b(scope: Scope, receive: Receive, send: Send) -> None:
    pass


async def sub_app(scope: Scope, receive: Receive, send: Send) -> None:
    pass


def test_static_path_compiles_to_no_regex() -> None:
    regex, fmt, converters = compile_path("/health")
    assert regex is None
    assert fmt == "/health"
    assert converters == {}


def test_parameters_compile_with_their_converters() -> None:
    regex, fmt, converters = compile_path("/users/{id:int}/files/{rest:path}")
    assert regex is not None
    assert fmt == "/users/{id}/files/{rest}"
    assert set(converters) == {"id", "rest"}
    found = regex.match("/users/12/files/a/b.txt")
    assert found is not None
    assert found.groupdict() == {"id": "12", "rest": "a/b.txt"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("users", "must start with '/'"),
        ("/users/{id:number}", "unknown converter 'number'"),
        ("/a/{x}/b/{x}", "appears twice"),
        ("/a/{x", "malformed"),
        ("/a/{1x}", "malformed"),
        ("/a/x}", "malformed"),
    ],
)
def test_bad_paths_are_refused(path: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        compile_path(path)


def test_literal_parts_are_escaped() -> None:
    router = Router()
    router.add_http("/files/{name}.txt", ["GET"], handler_a, name=None, endpoint=handler_a)
    assert router.match("http", "GET", "/files/report.txt").path_params == {"name": "report"}
    assert router.match("http", "GET", "/files/reportXtxt").handler is None


def test_static_http_lists_the_routes_match_http_finds_first_on_paths_without_parameters() -> None:
    router = Router()
    router.add_http("/", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_http("/items", ["POST"], handler_a, name=None, endpoint=handler_a)
    router.add_http("/items/{id:int}", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_websocket("/ws", handler_a, name=None, endpoint=handler_a)
    static = router.static_http()
    assert {path: sorted(by_method) for path, by_method in static.items()} == {
        "/": ["GET", "HEAD"],
        "/items": ["POST"],
    }
    for path, by_method in static.items():
        for method, route in by_method.items():
            assert router.match_http(method, path) == (route, {})


@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        ("/rooms/{room}", "/rooms/lobby", {"room": "lobby"}),
        ("/rooms/{room}", "/rooms/lob by", {"room": "lob by"}),
        ("/items/{id:int}", "/items/42", {"id": 42}),
        ("/items/{id:int}", "/items/007", {"id": 7}),
        ("/prices/{x:float}", "/prices/3.5", {"x": 3.5}),
        ("/prices/{x:float}", "/prices/3", {"x": 3.0}),
        (
            "/keys/{key:uuid}",
            "/keys/12345678-1234-5678-1234-567812345678",
            {"key": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        ),
        ("/files/{rest:path}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("/files/{rest:path}", "/files/", {"rest": ""}),
    ],
)
def test_converters_match_and_convert(pattern: str, path: str, params: dict[str, object]) -> None:
    router = Router()
    router.add_http(pattern, ["GET"], handler_a, name=None, endpoint=handler_a)
    match = router.match("http", "GET", path)
    assert match.handler is handler_a
    assert match.path_params == params
    assert {k: type(v) for k, v in match.path_params.items()} == {k: type(v) for k, v in params.items()}


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/rooms/{room}", "/rooms/"),
        ("/rooms/{room}", "/rooms/a/b"),
        ("/items/{id:int}", "/items/abc"),
        ("/items/{id:int}", "/items/-1"),
        ("/items/{id:int}", "/items/1.5"),
        ("/prices/{x:float}", "/prices/abc"),
        ("/prices/{x:float}", "/prices/1."),
        ("/keys/{key:uuid}", "/keys/not-a-uuid"),
        ("/keys/{key:uuid}", "/keys/12345678123456781234567812345678"),
        ("/files/{rest:path}", "/files"),
    ],
)
def test_converters_refuse_what_they_cannot_convert(pattern: str, path: str) -> None:
    router = Router()
    router.add_http(pattern, ["GET"], handler_a, name=None, endpoint=handler_a)
    match = router.match("http", "GET", path)
    assert match.handler is None
    assert match.allow == ""


def test_static_routes_win_over_parameters() -> None:
    router = Router()
    router.add_http("/users/{name}", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_http("/users/me", ["GET"], handler_b, name=None, endpoint=handler_b)
    assert router.match("http", "GET", "/users/me").handler is handler_b
    assert router.match("http", "GET", "/users/ann").handler is handler_a


def test_routes_starting_with_a_parameter_match() -> None:
    router = Router()
    router.add_http("/{lang}/about", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_http("/x{suffix}", ["GET"], handler_b, name=None, endpoint=handler_b)
    assert router.match("http", "GET", "/en/about").path_params == {"lang": "en"}
    assert router.match("http", "GET", "/xyz").path_params == {"suffix": "yz"}


def test_wrong_method_gives_allow_and_head_comes_with_get() -> None:
    router = Router()
    router.add_http("/things", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_http("/things", ["POST"], handler_b, name=None, endpoint=handler_b)
    assert router.match("http", "HEAD", "/things").handler is handler_a
    miss = router.match("http", "DELETE", "/things")
    assert miss.handler is None
    assert miss.allow == "GET, HEAD, POST"


def test_a_match_names_its_route_with_the_path_template() -> None:
    router = Router()
    router.add_http("/things/{id:int}", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_websocket("/things/{id:int}", handler_b, name=None, endpoint=handler_b)
    router.name_path("/things/{id:int}", "thing")
    route, params = router.match_http("HEAD", "/things/7")
    assert route is not None
    assert (route.path, route.path_format, route.method, route.name, params) == (
        "/things/{id:int}",
        "/things/{id:int}",
        "GET",
        "thing",
        {"id": 7},
    )
    assert route.handler is handler_a
    socket = router.match("websocket", "", "/things/7").route
    assert socket is not None
    assert (socket.method, socket.handler) == ("WEBSOCKET", handler_b)
    assert [(r.method, r.path) for r in router.routes()] == [
        ("GET", "/things/{id:int}"),
        ("WEBSOCKET", "/things/{id:int}"),
    ]
    assert router.match_http("GET", "/nothing") == (None, {})


def test_a_later_route_accepting_the_method_wins_over_a_partial_match() -> None:
    router = Router()
    router.add_http("/items/{id:int}", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_http("/items/{name}", ["POST"], handler_b, name=None, endpoint=handler_b)
    assert router.match("http", "POST", "/items/5").handler is handler_b
    router.add_http("/users/me", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_http("/users/{name}", ["DELETE"], handler_b, name=None, endpoint=handler_b)
    assert router.match("http", "DELETE", "/users/me").handler is handler_b


def test_a_websocket_route_is_found_behind_an_http_only_match() -> None:
    router = Router()
    router.add_http("/live/{id:int}", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_websocket("/live/{room}", handler_b, name=None, endpoint=handler_b)
    match = router.match("websocket", "", "/live/5")
    assert match.handler is handler_b
    assert match.path_params == {"room": "5"}


def test_duplicate_method_on_a_path_is_refused() -> None:
    router = Router()
    router.add_http("/x", ["GET"], handler_a, name=None, endpoint=handler_a)
    with pytest.raises(ConfigurationError, match="GET /x is registered twice"):
        router.add_http("/x", ["get"], handler_b, name=None, endpoint=handler_b)


def test_duplicate_websocket_route_is_refused() -> None:
    router = Router()
    router.add_websocket("/ws", handler_a, name=None, endpoint=handler_a)
    with pytest.raises(ConfigurationError, match="registered twice"):
        router.add_websocket("/ws", handler_b, name=None, endpoint=handler_b)


def test_duplicate_names_are_refused() -> None:
    router = Router()
    router.add_http("/a", ["GET"], handler_a, name="home", endpoint=handler_a)
    with pytest.raises(ConfigurationError, match="'home' is used twice"):
        router.add_http("/b", ["GET"], handler_b, name="home", endpoint=handler_b)


def test_websocket_and_http_share_a_path_but_not_handlers() -> None:
    router = Router()
    router.add_http("/live", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_websocket("/live", handler_b, name=None, endpoint=handler_b)
    assert router.match("http", "GET", "/live").handler is handler_a
    assert router.match("websocket", "", "/live").handler is handler_b
    router.add_websocket("/only-ws", handler_b, name=None, endpoint=handler_b)
    only = router.match("http", "GET", "/only-ws")
    assert only.handler is None
    assert only.upgrade is True  # the app answers 426 Upgrade Required (405 for other methods)
    assert only.allow == "GET, HEAD"
    assert router.match("http", "GET", "/nowhere").upgrade is False


def test_mounts_match_on_segment_boundaries_longest_first() -> None:
    router = Router()
    router.mount("/static", sub_app, name="static")
    router.mount("/static/special/", handler_a)
    assert router.match("http", "GET", "/static").mount is not None
    assert router.match("http", "GET", "/static/a.css").mount.prefix == "/static"  # type: ignore[union-attr]
    assert router.match("http", "GET", "/static/special/x").mount.prefix == "/static/special"  # type: ignore[union-attr]
    assert router.match("http", "GET", "/staticfile").mount is None


def test_routes_win_over_mounts() -> None:
    router = Router()
    router.mount("/api", sub_app)
    router.add_http("/api/health", ["GET"], handler_a, name=None, endpoint=handler_a)
    assert router.match("http", "GET", "/api/health").handler is handler_a
    assert router.match("http", "GET", "/api/other").mount is not None


def test_mounting_at_the_root_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="below a prefix"):
        Router().mount("/", sub_app)


def test_url_path_for_fills_and_converts_parameters() -> None:
    router = Router()
    router.add_http("/users/{id:int}/files/{rest:path}", ["GET"], handler_a, name="file", endpoint=handler_a)
    router.add_http("/prices/{x:float}", ["GET"], handler_a, name="price", endpoint=handler_a)
    router.add_http("/keys/{key:uuid}", ["GET"], handler_a, name="key", endpoint=handler_a)
    router.add_http("/", ["GET"], handler_a, name="home", endpoint=handler_a)
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert router.url_path_for("file", id=3, rest="a/b.txt") == "/users/3/files/a/b.txt"
    assert router.url_path_for("price", x=2.0) == "/prices/2"
    assert router.url_path_for("price", x=2.25) == "/prices/2.25"
    assert router.url_path_for("key", key=key) == f"/keys/{key}"
    assert router.url_path_for("home") == "/"
    # what url_path_for builds is matched back to the same values
    assert router.match("http", "GET", router.url_path_for("price", x=2.0)).path_params == {"x": 2.0}


def test_url_path_for_errors_name_the_problem() -> None:
    router = Router()
    router.add_http("/users/{id:int}", ["GET"], handler_a, name="user", endpoint=handler_a)
    with pytest.raises(ConfigurationError, match="no route is named 'nobody'"):
        router.url_path_for("nobody")
    with pytest.raises(ConfigurationError, match=r"takes parameters \['id'\], got \[\]"):
        router.url_path_for("user")
    with pytest.raises(ConfigurationError, match="got"):
        router.url_path_for("user", id=1, extra=2)


def test_url_path_for_a_mount() -> None:
    router = Router()
    router.mount("/static/", sub_app, name="static")
    assert router.url_path_for("static", path="css/site.css") == "/static/css/site.css"
    assert router.url_path_for("static", path="/x.js") == "/static/x.js"
    with pytest.raises(ConfigurationError, match="only path="):
        router.url_path_for("static", file="x")


def test_table_lists_routes_in_order_then_mounts() -> None:
    router = Router()
    router.add_http("/b", ["POST"], handler_b, name=None, endpoint=handler_b)
    router.add_http("/a", ["GET"], handler_a, name=None, endpoint=handler_a)
    router.add_websocket("/a", handler_b, name=None, endpoint=handler_b)
    router.mount("/static", sub_app)
    assert router.table() == [
        ("POST", "/b", f"{__name__}.handler_b"),
        ("GET", "/a", f"{__name__}.handler_a"),
        ("WEBSOCKET", "/a", f"{__name__}.handler_b"),
        ("MOUNT", "/static/*", f"{__name__}.sub_app"),
    ]


def test_many_routes_in_other_buckets_do_not_shadow_each_other() -> None:
    router = Router()
    handlers = {}
    for i in range(50):

        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            pass

        handlers[i] = handler
        router.add_http(f"/r{i}/{{id:int}}", ["GET"], handler, name=None, endpoint=handler)
    for i in (0, 17, 49):
        match = router.match("http", "GET", f"/r{i}/5")
        assert match.handler is handlers[i]
        assert match.path_params == {"id": 5}
    assert router.match("http", "GET", "/r50/5").handler is None


# through the app -------------------------------------------------------------


def new_app(**options: Any) -> Wirehall:
    options.setdefault("backplane", "memory://")
    return Wirehall(**options)


async def test_typed_path_parameters_reach_the_endpoint_converted() -> None:
    app = new_app()

    @app.get("/items/{id:int}")
    async def item(id: int) -> dict[str, Any]:
        return {"id": id, "type": type(id).__name__}

    @app.get("/prices/{x:float}")
    async def price(x: float) -> dict[str, Any]:
        return {"x": x, "type": type(x).__name__}

    @app.get("/keys/{key:uuid}")
    async def key(key: uuid.UUID) -> dict[str, Any]:
        return {"key": str(key), "type": type(key).__name__}

    @app.get("/files/{rest:path}")
    async def files(rest: str) -> dict[str, str]:
        return {"rest": rest}

    @app.get("/rooms/{room}")
    async def room(room: str, request: Request) -> dict[str, Any]:
        return {"room": room, "params": request.path_params}

    the_key = "12345678-1234-5678-1234-567812345678"
    async with TestClient(app) as client:
        assert (await client.get("/items/42")).json() == {"id": 42, "type": "int"}
        assert (await client.get("/prices/2.5")).json() == {"x": 2.5, "type": "float"}
        assert (await client.get(f"/keys/{the_key}")).json() == {"key": the_key, "type": "UUID"}
        assert (await client.get("/files/css/site.css")).json() == {"rest": "css/site.css"}
        assert (await client.get("/rooms/caf%C3%A9")).json() == {
            "room": "café",
            "params": {"room": "café"},
        }
        for bad in ("/items/abc", "/prices/x", "/keys/123", "/items/"):
            response = await client.get(bad)
            assert response.status_code == 404, bad
            assert response.json() == {"error": "Not Found"}


async def test_unknown_path_is_a_json_404() -> None:
    app = new_app()
    async with TestClient(app) as client:
        response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Not Found"}


async def test_wrong_method_is_a_405_with_allow() -> None:
    app = new_app()

    @app.route("/things", methods=["GET", "POST"])
    async def things(request: Request) -> str:
        return request.method

    async with TestClient(app) as client:
        assert (await client.post("/things")).text == "POST"
        response = await client.delete("/things")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert response.json() == {"error": "Method Not Allowed"}


async def test_head_is_served_by_get_without_a_body() -> None:
    app = new_app()
    calls: list[str] = []

    @app.get("/page")
    async def page(request: Request) -> str:
        calls.append(request.method)
        return "hello world"

    async with TestClient(app) as client:
        got = await client.get("/page")
        head = await client.head("/page")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] == "11"
    assert head.headers["content-type"] == got.headers["content-type"]
    assert calls == ["GET", "HEAD"]


async def test_head_of_an_endpoint_with_parameters_has_no_body_either() -> None:
    app = new_app()

    @app.get("/items/{id:int}")
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    async with TestClient(app) as client:
        head = await client.head("/items/3")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(b'{"id":3}'))


async def test_named_routes_and_url_path_for() -> None:
    app = new_app()

    @app.get("/users/{id:int}", name="user")
    async def show_user(id: int, request: Request) -> dict[str, str]:
        return {"self": request.url_for("user", id=id)}

    @app.get("/about")
    async def about() -> str:
        return "about"

    assert app.url_path_for("user", id=5) == "/users/5"
    assert app.url_path_for("about") == "/about"  # named after the function
    with pytest.raises(ConfigurationError, match="no route is named 'show_user'"):
        app.url_path_for("show_user")
    async with TestClient(app) as client:
        assert (await client.get("/users/5")).json() == {"self": "http://testserver/users/5"}


async def test_the_same_function_on_two_paths_keeps_the_first_auto_name() -> None:
    app = new_app()

    async def page() -> str:
        return "page"

    app.add_route("/one", page)
    app.add_route("/two", page)
    assert app.url_path_for("page") == "/one"


async def test_duplicate_registrations_are_refused() -> None:
    app = new_app()

    @app.get("/x")
    async def first() -> str:
        return "1"

    async def second() -> str:
        return "2"

    with pytest.raises(ConfigurationError, match="GET /x is registered twice"):
        app.get("/x")(second)
    with pytest.raises(ConfigurationError, match="'first' is used twice"):
        app.get("/y", name="first")(second)


async def test_sync_endpoints_are_refused_at_registration() -> None:
    app = new_app()

    def sync_endpoint() -> str:
        return "x"

    with pytest.raises(ConfigurationError, match="must be an async function"):
        app.get("/")(sync_endpoint)


async def test_groups_prefix_paths_and_names_and_nest() -> None:
    app = new_app()
    api = app.group("/api", name_prefix="api:")
    v1 = api.group("/v1", name_prefix="v1:")

    @api.get("/health", name="health")
    async def health() -> str:
        return "ok"

    @v1.post("/items/{id:int}", name="item")
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    assert app.url_path_for("api:health") == "/api/health"
    assert app.url_path_for("api:v1:item", id=3) == "/api/v1/items/3"
    async with TestClient(app) as client:
        assert (await client.get("/api/health")).text == "ok"
        assert (await client.post("/api/v1/items/3")).json() == {"id": 3}
        assert (await client.get("/health")).status_code == 404
        assert (await client.get("/api/v1/items/3")).status_code == 405


@pytest.mark.parametrize("prefix", ["api", "/api/", ""])
def test_group_prefix_must_be_well_formed(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="must start with '/'"):
        new_app().group(prefix)


async def test_every_method_decorator_registers_its_method() -> None:
    app = new_app()

    async def echo(request: Request) -> str:
        return request.method

    app.put("/r")(echo)
    app.patch("/r")(echo)
    app.delete("/r")(echo)
    app.options("/r")(echo)
    app.post("/r")(echo)
    async with TestClient(app) as client:
        for method in ("PUT", "PATCH", "DELETE", "OPTIONS", "POST"):
            response = await client.request(method, "/r")
            assert response.text == method
        assert (await client.get("/r")).status_code == 405


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps(
        {
            "path": scope["path"],
            "root_path": scope["root_path"],
            "raw_path": scope["raw_path"].decode(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_a_mounted_app_sees_its_root_path_and_the_rest_of_the_path() -> None:
    app = new_app()
    app.mount("/sub", echo_app, name="sub")
    async with TestClient(app) as client:
        below = (await client.get("/sub/a/b")).json()
        root = (await client.get("/sub")).json()
        assert (await client.get("/subway")).status_code == 404
    assert below == {"path": "/a/b", "root_path": "/sub", "raw_path": "/a/b"}
    assert root == {"path": "/", "root_path": "/sub", "raw_path": "/"}
    assert app.url_path_for("sub", path="a/b") == "/sub/a/b"


async def test_a_mounted_wirehall_app_routes_below_its_prefix() -> None:
    child = new_app(security_headers=False)

    @child.get("/items/{id:int}", name="item")
    async def item(id: int, request: Request) -> dict[str, Any]:
        return {"id": id, "path": request.path, "url": str(request.url), "for": request.url_for("item", id=1)}

    parent = new_app()
    parent.mount("/child", child)
    async with TestClient(child), TestClient(parent) as client:
        response = await client.get("/child/items/7")
    assert response.json() == {
        "id": 7,
        "path": "/items/7",
        "url": "http://testserver/child/items/7",
        "for": "http://testserver/child/items/1",
    }


async def test_an_error_in_a_mounted_app_is_a_json_500(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("sub-app bug")

    app = new_app()
    app.mount("/broken", broken)
    with caplog.at_level(logging.CRITICAL):
        async with TestClient(app) as client:
            response = await client.get("/broken/x")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}


async def test_static_files_through_the_app(tmp_path: Path) -> None:
    (tmp_path / "site.css").write_text("body{}")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.html").write_text("<p>docs</p>")
    app = new_app()
    app.static("/static", tmp_path)
    app.static("/site", tmp_path, name="site", html=True)
    async with TestClient(app) as client:
        css = await client.get("/static/site.css")
        index = await client.get("/site/docs/")
        missing = await client.get("/static/missing.css")
    assert (css.status_code, css.text) == (200, "body{}")
    assert css.headers["content-type"].startswith("text/css")
    assert index.text == "<p>docs</p>"
    assert missing.status_code == 404
    assert missing.json() == {"error": "file not found"}
    assert app.url_path_for("static", path="site.css") == "/static/site.css"


async def table_home() -> str:
    return "home"


async def table_item(id: int) -> dict[str, int]:
    return {"id": id}


class TableController(HTTPController):
    async def get(self) -> str:
        return "controller get"

    async def delete(self) -> None:
        return None


async def table_socket(websocket: Any) -> None:
    pass


async def test_a_route_table_registers_routes_websockets_and_mounts() -> None:
    app = new_app(
        routes=[
            Route("/", table_home, name="home"),
            Route("/items/{id:int}", table_item, methods=["GET", "PUT"]),
            Route("/ctl", TableController),
            Mount("/sub", echo_app, name="sub"),
        ]
    )
    async with TestClient(app) as client:
        assert (await client.get("/")).text == "home"
        assert (await client.put("/items/2")).json() == {"id": 2}
        assert (await client.get("/ctl")).text == "controller get"
        assert (await client.delete("/ctl")).status_code == 204
        assert (await client.post("/ctl")).headers["allow"] == "DELETE, GET, HEAD"
        assert (await client.get("/sub/x")).json()["path"] == "/x"
    assert app.url_path_for("home") == "/"
    rows = app.router.table()
    assert ("GET,PUT", "/items/{id:int}", f"{__name__}.table_item") in rows
    assert ("DELETE,GET", "/ctl", f"{__name__}.TableController") in rows
    assert ("MOUNT", "/sub/*", f"{__name__}.echo_app") in rows


async def test_websocket_routes_are_registered_from_a_table_and_a_decorator() -> None:
    from wirehall import WebSocketController

    class Echo(WebSocketController):
        pass

    app = new_app(routes=[WebSocketRoute("/ws/table", Echo, name="table_ws")])
    app.websocket("/ws/{room}", name="room_ws")(Echo)
    assert app.url_path_for("table_ws") == "/ws/table"
    assert app.url_path_for("room_ws", room="lobby") == "/ws/lobby"
    rows = app.router.table()
    assert [r[0] for r in rows] == ["WEBSOCKET", "WEBSOCKET"]
    with pytest.raises(ConfigurationError, match="registered twice"):
        app.add_websocket_route("/ws/table", Echo)


def test_a_table_entry_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is not a Route, WebSocketRoute or Mount"):
        new_app(routes=[("/", table_home)])


async def test_path_params_of_one_request_never_leak_into_another() -> None:
    app = new_app()

    @app.get("/a")
    async def a(request: Request) -> dict[str, Any]:
        request.path_params["leaked"] = True
        return dict(request.path_params)

    @app.get("/b")
    async def b(request: Request) -> dict[str, Any]:
        return dict(request.path_params)

    async with TestClient(app) as client:
        await client.get("/a")
        assert (await client.get("/b")).json() == {}


@pytest.mark.usefixtures("websocket_path")
async def test_a_websocket_to_an_unknown_path_is_refused_with_a_json_404() -> None:
    from wirehall.testing.websocket import HandshakeRejectedError

    app = new_app()

    @app.get("/http-only")
    async def http_only() -> str:
        return "x"

    async with TestClient(app) as client:
        for path in ("/ws/nowhere", "/http-only"):
            with pytest.raises(HandshakeRejectedError) as info:
                async with client.websocket_connect(path):
                    pass
            assert info.value.status == 404
            assert info.value.json() == {"error": "Not Found"}


async def test_a_websocket_to_an_unknown_path_without_the_denial_extension_is_closed() -> None:
    app = new_app()
    sent: list[Message] = []
    inbox: list[Message] = [{"type": "websocket.connect"}]

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws/nowhere",
        "raw_path": b"/ws/nowhere",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    async with TestClient(app):
        await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert [m["type"] for m in sent] == ["websocket.close"]


async def test_plain_http_to_a_websocket_path_says_upgrade_or_405() -> None:
    from wirehall import WebSocketController, Wirehall
    from wirehall.testing import TestClient

    app = Wirehall()

    @app.websocket("/live/{room}")
    class Live(WebSocketController):
        pass

    async with TestClient(app) as client:
        plain = await client.get("/live/lobby")
        assert plain.status_code == 426
        assert plain.headers["upgrade"] == "websocket"
        assert "error" in plain.json()
        posted = await client.post("/live/lobby")
        assert posted.status_code == 405
        assert posted.headers["allow"] == "GET, HEAD"
        assert (await client.get("/elsewhere")).status_code == 404
