from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from wirehall import Request, Wirehall
from wirehall.datastructures import Address
from wirehall.errors import HTTPError
from wirehall.http.forms import UploadFile
from wirehall.http.request import DEFAULT_MAX_BODY_SIZE
from wirehall.testing.client import TestClient
from wirehall.types import Message

from ._scopes import body_stream, http_scope


class ChatMessage(msgspec.Struct):
    room: str
    text: str
    priority: int = 0


def test_what_the_scope_says() -> None:
    scope = http_scope(
        "/items/7",
        method="PATCH",
        query=b"tag=a&tag=b&page=2&empty=",
        headers=[
            ("Host", "shop.example:8080"),
            ("Accept", "text/html"),
            ("Accept", "application/json"),
            ("Cookie", 'sid=abc123; theme="dark"'),
            ("X-Request-ID", "r-1"),
        ],
        root_path="/api",
        path_params={"id": 7},
    )
    request = Request(scope, body_stream())
    assert request.method == "PATCH"
    assert request.path == "/items/7"
    assert request.path_params == {"id": 7}
    assert str(request.url) == "http://shop.example:8080/api/items/7?tag=a&tag=b&page=2&empty="
    assert request.url.path == "/api/items/7"
    assert request.query["page"] == "2"
    assert request.query.getlist("tag") == ["a", "b"]
    assert request.query["empty"] == ""
    assert "missing" not in request.query
    assert request.headers["x-request-id"] == "r-1"
    assert request.headers["X-REQUEST-ID"] == "r-1"
    assert request.headers.getlist("accept") == ["text/html", "application/json"]
    assert request.cookies == {"sid": "abc123", "theme": "dark"}
    assert request.client == Address("203.0.113.7", 41234)
    assert request.user is None


def test_missing_parts_of_the_scope_have_sensible_defaults() -> None:
    scope = http_scope("/")
    del scope["client"]
    request = Request(scope, body_stream())
    assert request.client is None
    assert request.cookies == {}
    assert request.path_params == {}
    assert len(request.query) == 0
    assert str(request.url) == "http://testserver/"


def test_state_is_per_request_and_shared_by_views_of_one_request() -> None:
    scope_a, scope_b = http_scope("/a"), http_scope("/b")
    first = Request(scope_a, body_stream())
    first.state.user_id = 42  # State lacks __setattr__ for mypy
    assert Request(scope_a, body_stream()).state.user_id == 42
    assert "user_id" not in Request(scope_b, body_stream()).state


def test_session_without_middleware_is_an_empty_dict_kept_in_the_scope() -> None:
    scope = http_scope()
    Request(scope, body_stream()).session["n"] = 1
    assert Request(scope, body_stream()).session == {"n": 1}


async def test_body_is_read_across_chunks_once() -> None:
    request = Request(http_scope(method="POST"), body_stream(b"hel", b"", b"lo"))
    assert await request.body() == b"hello"
    assert await request.body() == b"hello"
    assert [chunk async for chunk in request.stream()] == [b"hello"]


async def test_stream_gives_chunks_as_they_arrive() -> None:
    request = Request(http_scope(method="POST"), body_stream(b"a", b"b", b"c"))
    assert [chunk async for chunk in request.stream()] == [b"a", b"b", b"c"]
    with pytest.raises(HTTPError, match="already streamed"):
        [chunk async for chunk in request.stream()]


async def test_declared_oversized_body_is_refused_before_reading() -> None:
    async def receive() -> Message:
        raise AssertionError("the body must not be read")

    scope = http_scope(method="POST", headers=[("Content-Length", "11")])
    request = Request(scope, receive, max_body_size=10)
    with pytest.raises(HTTPError) as info:
        await request.body()
    assert info.value.status == 413
    assert "10 bytes" in info.value.detail


async def test_streamed_oversized_body_is_refused_even_when_content_length_lies() -> None:
    for headers in ([], [("Content-Length", "3")]):
        scope = http_scope(method="POST", headers=headers)
        request = Request(scope, body_stream(b"x" * 6, b"x" * 6), max_body_size=10)
        with pytest.raises(HTTPError) as info:
            await request.body()
        assert info.value.status == 413


async def test_body_exactly_at_the_limit_is_fine() -> None:
    scope = http_scope(method="POST", headers=[("Content-Length", "10")])
    request = Request(scope, body_stream(b"x" * 4, b"x" * 6), max_body_size=10)
    assert await request.body() == b"x" * 10


def test_limit_comes_from_the_app_or_the_default() -> None:
    class App:
        max_body_size = 123

    assert Request(http_scope(app=App()), body_stream()).max_body_size == 123
    assert Request(http_scope(), body_stream()).max_body_size == DEFAULT_MAX_BODY_SIZE
    assert Request(http_scope(app=App()), body_stream(), max_body_size=5).max_body_size == 5


async def test_client_disconnect_while_reading_is_an_http_error() -> None:
    request = Request(http_scope(method="POST"), body_stream(b"part", disconnect=True))
    with pytest.raises(HTTPError) as info:
        await request.body()
    assert info.value.status == 400
    assert "disconnected" in info.value.detail


async def test_is_disconnected() -> None:
    request = Request(http_scope(method="POST"), body_stream(b"x", disconnect=False))
    assert await request.is_disconnected() is False
    await request.body()
    assert await request.is_disconnected() is False

    gone: list[Message] = [{"type": "http.disconnect"}]

    async def receive() -> Message:
        return gone[0]

    request = Request(http_scope(method="POST"), body_stream(b"x"))
    await request.body()
    request.receive = receive
    assert await request.is_disconnected() is True


async def test_json_body() -> None:
    request = Request(http_scope(method="POST"), body_stream(b'{"a": [1, 2', b', 3], "b": null}'))
    assert await request.json() == {"a": [1, 2, 3], "b": None}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{not json}", "not valid JSON"),
        (b'{"a": 1', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
async def test_bad_json_is_a_400(body: bytes, message: str) -> None:
    request = Request(http_scope(method="POST"), body_stream(body))
    with pytest.raises(HTTPError) as info:
        await request.json()
    assert info.value.status == 400
    assert message in info.value.detail


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"room": ' + b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000]
)
async def test_deeply_nested_json_is_a_400_not_a_crash(body: bytes) -> None:
    request = Request(http_scope(method="POST"), body_stream(body))
    with pytest.raises(HTTPError) as info:
        await request.json()
    assert info.value.status == 400
    # json_as decodes once, straight into the type: the first value of the wrong shape is
    # reported (422) before the syntax error further on would be
    request = Request(http_scope(method="POST"), body_stream(body))
    with pytest.raises(HTTPError) as info:
        await request.json_as(ChatMessage)
    assert info.value.status in (400, 422)


async def test_json_as_decodes_and_validates() -> None:
    request = Request(http_scope(method="POST"), body_stream(b'{"room": "lobby", "text": "hi"}'))
    assert await request.json_as(ChatMessage) == ChatMessage("lobby", "hi", 0)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b'{"room": "lobby"}', 422, "text"),
        (b'{"room": 5, "text": "hi"}', 422, "room"),
        (b'{"room": "a", "text": "b", "priority": "high"}', 422, "priority"),
        (b"[1, 2]", 422, "object"),
        (b"{", 400, "not valid JSON"),
        (b"", 400, "empty"),
    ],
)
async def test_json_as_errors(body: bytes, status: int, fragment: str) -> None:
    request = Request(http_scope(method="POST"), body_stream(body))
    with pytest.raises(HTTPError) as info:
        await request.json_as(ChatMessage)
    assert info.value.status == status
    assert fragment in info.value.detail


async def test_urlencoded_form() -> None:
    scope = http_scope(method="POST", headers=[("Content-Type", "application/x-www-form-urlencoded")])
    request = Request(scope, body_stream(b"name=ann+b&tag=x&tag=y&empty="))
    form = await request.form()
    assert form["name"] == "ann b"
    assert form.getlist("tag") == ["x", "y"]
    assert form["empty"] == ""
    assert await request.form() is form


async def test_form_after_the_body_was_read() -> None:
    scope = http_scope(method="POST", headers=[("Content-Type", "application/x-www-form-urlencoded")])
    request = Request(scope, body_stream(b"a=1", b"&b=2"))
    assert await request.body() == b"a=1&b=2"
    form = await request.form()
    assert (form["a"], form["b"]) == ("1", "2")


async def test_huge_or_odd_content_length() -> None:
    scope = http_scope(method="POST", headers=[("Content-Length", "9" * 30)])
    with pytest.raises(HTTPError) as info:
        await Request(scope, body_stream(b"x")).body()
    assert info.value.status == 413
    for odd in ("abc", "-1", ""):
        scope = http_scope(method="POST", headers=[("Content-Length", odd)])
        assert await Request(scope, body_stream(b"xyz")).body() == b"xyz"


async def test_form_with_an_unsupported_type_is_a_415() -> None:
    scope = http_scope(method="POST", headers=[("Content-Type", "application/json")])
    request = Request(scope, body_stream(b"{}"))
    with pytest.raises(HTTPError) as info:
        await request.form()
    assert info.value.status == 415


# through the app ----------------------------------------------------------------


def new_app(**options: Any) -> Wirehall:
    options.setdefault("backplane", "memory://")
    app = Wirehall(**options)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        return {"json": await request.json()}

    @app.post("/typed")
    async def typed(request: Request) -> ChatMessage:
        return await request.json_as(ChatMessage)

    @app.post("/size")
    async def size(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        data = await request.form()
        out: dict[str, Any] = {}
        for key, value in data.multi_items():
            if isinstance(value, UploadFile):
                out[key] = {
                    "filename": value.filename,
                    "type": value.content_type,
                    "size": value.size,
                    "content": (await value.read()).decode(),
                }
            else:
                out.setdefault(key, []).append(value)
        return out

    @app.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        request.state.seen = "yes"  # State lacks __setattr__ for mypy
        return {"before": "count" in request.state, "after": request.state.seen}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, Any]:
        return {
            "client": list(request.client) if request.client else None,
            "agent": request.headers.get("user-agent"),
            "cookies": request.cookies,
            "tags": request.query.getlist("tag"),
        }

    return app


async def test_json_round_trip_and_bad_json_through_the_app() -> None:
    async with TestClient(new_app()) as client:
        ok = await client.post("/echo", json={"x": [1, "two"]})
        bad = await client.post("/echo", content=b"{oops", headers={"content-type": "application/json"})
        empty = await client.post("/echo")
    assert ok.json() == {"json": {"x": [1, "two"]}}
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/json"
    assert "not valid JSON" in bad.json()["error"]
    assert empty.status_code == 400
    assert "error" in empty.json()


async def test_deeply_nested_json_through_the_app_is_a_400(caplog: pytest.LogCaptureFixture) -> None:
    async with TestClient(new_app()) as client:
        untyped = await client.post("/echo", content=b"[" * 100_000)
        typed = await client.post("/typed", content=b'{"room": ' + b"[" * 100_000)
        nested = await client.post("/typed", content=b'{"room": "r", "text": "t", "extra": ' + b"[" * 100_000)
    # one pass into the type: "room" is an array where a str belongs (422) before the syntax error
    assert (untyped.status_code, typed.status_code, nested.status_code) == (400, 422, 400)
    assert "error" in untyped.json()
    assert "error" in typed.json()


async def test_json_as_through_the_app() -> None:
    async with TestClient(new_app()) as client:
        ok = await client.post("/typed", json={"room": "r", "text": "t", "priority": 2})
        invalid = await client.post("/typed", json={"room": "r"})
    assert ok.json() == {"room": "r", "text": "t", "priority": 2}
    assert invalid.status_code == 422
    assert "text" in invalid.json()["error"]


async def test_body_limit_through_the_app_declared_and_streamed() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 300

    async with TestClient(new_app(max_body_size=1000)) as client:
        small = await client.post("/size", content=b"x" * 1000)
        declared = await client.post("/size", content=b"x" * 1001)
        streamed = await client.post("/size", content=chunks())
    assert small.json() == {"size": 1000}
    assert declared.status_code == 413
    assert "error" in declared.json()
    assert streamed.status_code == 413
    assert "1000 bytes" in streamed.json()["error"]


async def test_forms_and_uploads_through_the_app() -> None:
    async with TestClient(new_app()) as client:
        urlencoded = await client.post("/form", data={"name": "ann", "tag": ["a", "b"]})
        multipart = await client.post(
            "/form",
            data={"title": "report"},
            files=[
                ("doc", ("notes.txt", b"line one\nline two", "text/plain")),
                ("doc", ("empty.bin", b"", "application/octet-stream")),
            ],
        )
    assert urlencoded.json() == {"name": ["ann"], "tag": ["a", "b"]}
    assert multipart.status_code == 200
    body = multipart.json()
    assert body["title"] == ["report"]
    assert body["doc"] == {
        "filename": "empty.bin",
        "type": "application/octet-stream",
        "size": 0,
        "content": "",
    }


async def test_a_single_upload_keeps_its_content() -> None:
    async with TestClient(new_app()) as client:
        response = await client.post("/form", files={"f": ("a.txt", b"hello upload", "text/plain")})
    assert response.json() == {
        "f": {"filename": "a.txt", "type": "text/plain", "size": 12, "content": "hello upload"}
    }


async def test_form_errors_through_the_app() -> None:
    async with TestClient(new_app()) as client:
        wrong_type = await client.post("/form", json={"a": 1})
        no_boundary = await client.post(
            "/form", content=b"x", headers={"content-type": "multipart/form-data"}
        )
    assert wrong_type.status_code == 415
    assert "error" in wrong_type.json()
    assert no_boundary.status_code == 400
    assert "boundary" in no_boundary.json()["error"]


async def test_state_headers_client_cookies_through_the_app() -> None:
    async with TestClient(new_app()) as client:
        state = await client.get("/state")
        again = await client.get("/state")
        who = await client.get(
            "/whoami?tag=1&tag=2",
            headers={"User-Agent": "tester/1", "Cookie": "sid=s1"},
        )
    assert state.json() == again.json() == {"before": False, "after": "yes"}
    assert who.json() == {
        "client": ["127.0.0.1", 50000],
        "agent": "tester/1",
        "cookies": {"sid": "s1"},
        "tags": ["1", "2"],
    }


@pytest.mark.parametrize("body", [b'{"user": "\xff", "text": "x"}', b'{"a": "\xe9"}', b"\xff\xfe"])
async def test_a_body_that_is_not_utf8_is_a_400(body: bytes) -> None:
    request = Request(http_scope(method="POST"), body_stream(body))
    with pytest.raises(HTTPError) as info:
        await request.json()
    assert info.value.status == 400
