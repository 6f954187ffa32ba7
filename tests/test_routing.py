"""Path compiling and matching on the Router itself (through the app: tests/test_app_routing below)."""

from __future__ import annotations

import uuid

import pytest

from wirehall.errors import ConfigurationError
from wirehall.routing import Router, compile_path
from wirehall.types import Receive, Scope, Send


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
    assert only.allow == ""


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
