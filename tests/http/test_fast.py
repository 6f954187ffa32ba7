"""The HTTP fast path sends exactly the ASGI messages the general path sends.

Each endpoint is registered twice: without parameters, which `build_http_endpoint` serves
through `wirehall.http._fast.plain_endpoint`, and with an unused `Request` parameter,
which takes the general handler (DI scope, Request, `Response.__call__`). Both are
driven through the app with the same request, and their messages must be equal.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec
import pytest

from wirehall import HTMLResponse, HTTPError, Request, Response, StreamingResponse, Wirehall, requires_auth
from wirehall.http._fast import DefaultHeaders, to_response
from wirehall.http.response import JSONResponse, PlainTextResponse
from wirehall.security.headers import SecurityHeadersMiddleware
from wirehall.types import Message

from ._scopes import body_stream, http_scope, run_asgi, status_of


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Pair:
    left: str
    right: str


def _stream() -> StreamingResponse:
    chunks: list[bytes | str] = [b"a", "b"]
    return StreamingResponse(chunks, media_type="text/plain")


RESULTS: dict[str, Callable[[], Any]] = {
    "dict": lambda: {"hello": "world", "n": [1, 2]},
    "list": lambda: [1, "two", None],
    "str": lambda: "Hello, world!",
    "empty-str": lambda: "",
    "long-str": lambda: "é" * 1500,  # 3,000 bytes: past the table of content lengths
    "long-list": lambda: list(range(1000)),
    "none": lambda: None,
    "bytes": lambda: b"\x00\x01",
    "tuple": lambda: ({"created": True}, 201),
    "struct": lambda: Point(1, 2),
    "dataclass": lambda: Pair("l", "r"),
    "number": lambda: 3.5,
    "response": lambda: Response("raw", 202, media_type="text/csv"),
    "html": lambda: HTMLResponse("<p>hi</p>"),
    "with-headers": lambda: PlainTextResponse("x", headers={"X-Frame-Options": "SAMEORIGIN"}),
    "stream": _stream,
}


def _raises(exc: Exception) -> Callable[[], Any]:
    def result() -> Any:
        raise exc

    return result


FAILURES: dict[str, Callable[[], Any]] = {
    "http-error": _raises(HTTPError(409, "taken", headers={"Retry-After": "3"})),
    "crash": _raises(RuntimeError("boom")),
    "unencodable": lambda: {"x": object()},
}


def _build(security_headers: bool) -> Wirehall:
    app = Wirehall(backplane="memory://", security_headers=security_headers, allowed_hosts=["*"])
    for name, make in {**RESULTS, **FAILURES}.items():
        _register_pair(app, name, make)

    @app.get("/fast/private")
    @requires_auth
    async def fast_private() -> str:
        return "secret"

    @app.get("/general/private")
    @requires_auth
    async def general_private(request: Request) -> str:
        return "secret"

    return app


def _register_pair(app: Wirehall, name: str, make: Callable[[], Any]) -> None:
    async def fast() -> Any:
        return make()

    async def general(request: Request) -> Any:
        return make()

    app.add_route(f"/fast/{name}", fast, name=f"fast-{name}")
    app.add_route(f"/general/{name}", general, name=f"general-{name}")


async def _messages(app: Wirehall, path: str, method: str, scheme: str) -> list[Message]:
    return await run_asgi(app, http_scope(path, method=method, scheme=scheme))


@pytest.fixture(params=[True, False], ids=["security-headers", "bare"])
async def app(request: pytest.FixtureRequest) -> Any:
    app = _build(request.param)
    await app.startup()
    yield app
    await app.shutdown()


@pytest.mark.parametrize(
    ("method", "scheme"), [("GET", "http"), ("HEAD", "http"), ("GET", "https")], ids=["get", "head", "https"]
)
async def test_fast_and_general_paths_send_the_same_messages(app: Wirehall, method: str, scheme: str) -> None:
    await _messages(app, "/fast/str", method, scheme)
    # every parameterless endpoint but the one with an access rule is answered by the app
    # itself (`Wirehall._inline`, built at startup)
    inline = sorted(path for path in app._inline if path.startswith("/fast/"))
    assert inline == sorted(f"/fast/{name}" for name in [*RESULTS, *FAILURES])
    differ = {}
    for way in ("the app's shortcut", "the route's handler"):
        if way == "the route's handler":
            app._inline = {}  # as a request event subscriber leaves it: every request through `_route`
        for name in [*RESULTS, *FAILURES, "private"]:
            fast = await _messages(app, f"/fast/{name}", method, scheme)
            general = await _messages(app, f"/general/{name}", method, scheme)
            assert fast[0]["type"] == "http.response.start", name
            if fast != general:
                differ[name, way] = (fast, general)
    assert differ == {}


async def test_the_fast_path_answers_a_crash_with_a_500(app: Wirehall) -> None:
    messages = await _messages(app, "/fast/crash", "GET", "http")
    assert messages[0]["status"] == 500
    assert messages[1]["body"] == b'{"error":"Internal Server Error"}'


@pytest.mark.parametrize(
    ("value", "general"),
    [
        ("text", PlainTextResponse("text")),
        ("", PlainTextResponse("")),
        ({"a": [1, 2]}, JSONResponse({"a": [1, 2]})),
        ([], JSONResponse([])),
    ],
)
def test_quick_responses_equal_the_general_constructors(value: Any, general: Response) -> None:
    quick = to_response(value)
    assert type(quick) is type(general)
    assert (quick.status, quick.raw_headers, quick.body) == (
        general.status,
        general.raw_headers,
        general.body,
    )


@pytest.mark.parametrize("https", [False, True])
@pytest.mark.parametrize(
    "response",
    [
        PlainTextResponse("x"),
        JSONResponse({"a": 1}),
        HTMLResponse("<p>"),
        Response(b"", 204),
        PlainTextResponse("x", headers={"Referrer-Policy": "no-referrer"}),
    ],
    ids=["text", "json", "html", "no-content", "own-header"],
)
def test_default_headers_equal_add_headers(response: Response, https: bool) -> None:
    source = SecurityHeadersMiddleware(PlainTextResponse("unused"))
    expected = list(response.raw_headers)
    source.add_headers(expected, https=https)
    DefaultHeaders(source)(response, {"scheme": "https" if https else "http"})
    assert response.raw_headers == expected


# typed endpoints: path, query and JSON body -----------------------------------------------


class Item(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    price: Annotated[float, msgspec.Meta(ge=0)]
    tags: list[str] = []


class Service:
    """Something from the container: taking it sends an endpoint down the general path."""


def _typed_app(status_code: int | None, max_body_size: int = 1024) -> Wirehall:
    """`/scope/...` binds from the scope alone, `/request/...` builds a Request (it takes one),
    `/general/...` resolves a container value as well; all three answer the same."""
    app = Wirehall(backplane="memory://", allowed_hosts=["*"], max_body_size=max_body_size)
    app.container.instance(Service, Service())

    async def by_scope(
        item_id: int,
        item: Item,
        limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 10,
        verbose: bool = False,
        tag: list[str] | None = None,
        q: str | None = None,
    ) -> dict[str, Any]:
        return {"id": item_id, "item": item, "limit": limit, "verbose": verbose, "tag": tag, "q": q}

    async def by_request(
        request: Request,
        item_id: int,
        item: Item,
        limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 10,
        verbose: bool = False,
        tag: list[str] | None = None,
        q: str | None = None,
    ) -> dict[str, Any]:
        return await by_scope(item_id, item, limit, verbose, tag, q)

    async def general(
        service: Service,
        item_id: int,
        item: Item,
        limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 10,
        verbose: bool = False,
        tag: list[str] | None = None,
        q: str | None = None,
    ) -> dict[str, Any]:
        return await by_scope(item_id, item, limit, verbose, tag, q)

    async def name_only(name: str, count: int = 1) -> Item:
        return Item(name * count, 1.0)

    async def name_general(service: Service, name: str, count: int = 1) -> Item:
        return Item(name * count, 1.0)

    for prefix, endpoint in (("scope", by_scope), ("request", by_request), ("general", general)):
        app.post(f"/{prefix}/items/{{item_id:int}}", status_code=status_code)(endpoint)
    app.get("/scope/names/{name}", status_code=status_code)(name_only)
    app.get("/general/names/{name}", status_code=status_code)(name_general)
    return app


TYPED_REQUESTS: dict[str, tuple[str, bytes, tuple[bytes, ...]]] = {
    "valid": ("/items/42", b"limit=5&verbose=true", (b'{"name": "pen", "price": 1.5}',)),
    "defaults": ("/items/1", b"", (b'{"name": "pen", "price": 0}',)),
    "repeated-and-quoted": (
        "/items/1",
        b"limit=5&limit=7&tag=a&tag=b%20c&q=x+y%26",
        (b'{"name":"n","price":1}',),
    ),
    "blank-values": ("/items/1", b"q=&tag=&verbose", (b'{"name":"n","price":1}',)),
    "limit-out-of-range": ("/items/1", b"limit=0", (b'{"name":"n","price":1}',)),
    "limit-not-a-number": ("/items/1", b"limit=abc&verbose=maybe", (b'{"name":"n","price":1}',)),
    "limit-leading-zero": ("/items/1", b"limit=007", (b'{"name":"n","price":1}',)),
    "body-wrong-shape": ("/items/1", b"", (b'{"name": "", "price": -1}',)),
    "body-missing-field": ("/items/1", b"", (b'{"name": "pen"}',)),
    "body-not-json": ("/items/1", b"", (b"{name",)),
    "body-empty": ("/items/1", b"", (b"",)),
    "body-in-chunks": ("/items/7", b"", (b'{"name": "pe', b'n", "price": 2}')),
    "body-too-large": ("/items/1", b"", (b'{"name": "' + b"x" * 2000 + b'", "price": 1}',)),
    "both-wrong": ("/items/1", b"limit=900", (b'{"price": "free"}',)),
}


@pytest.mark.parametrize("status_code", [None, 201])
@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("case", list(TYPED_REQUESTS))
async def test_typed_fast_paths_send_what_the_general_path_sends(
    case: str, scheme: str, status_code: int | None
) -> None:
    app = _typed_app(status_code)
    path, query, chunks = TYPED_REQUESTS[case]
    length = str(sum(len(chunk) for chunk in chunks))
    async with _started(app):
        sent = {}
        for prefix in ("scope", "request", "general"):
            scope = http_scope(
                f"/{prefix}{path}",
                method="POST",
                query=query,
                scheme=scheme,
                headers=[("content-type", "application/json"), ("content-length", length)],
            )
            sent[prefix] = await run_asgi(app, scope, body_stream(*chunks))
    assert sent["scope"][0]["type"] == "http.response.start"
    assert sent["scope"] == sent["general"]
    assert sent["request"] == sent["general"]


@pytest.mark.parametrize("query", [b"", b"count=3", b"count=x", b"count=2&count=3"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_struct_answer_on_the_fast_path_equals_the_general_path(query: bytes, method: str) -> None:
    app = _typed_app(None)
    async with _started(app):
        fast = await run_asgi(app, http_scope("/scope/names/ab", method=method, query=query))
        general = await run_asgi(app, http_scope("/general/names/ab", method=method, query=query))
    assert fast == general


async def test_an_unmarked_route_skips_the_access_check_once_the_app_has_started() -> None:
    app = Wirehall(backplane="memory://", allowed_hosts=["*"])

    async def hello() -> str:
        return "hello"

    app.get("/")(hello)
    async with _started(app):
        assert status_of(await run_asgi(app, http_scope("/"))) == 200
        # marks are read at startup: one added while the app serves is not seen
        requires_auth(hello)
        assert status_of(await run_asgi(app, http_scope("/"))) == 200


async def test_a_handler_used_without_an_app_checks_every_request() -> None:
    from wirehall.di import Container
    from wirehall.http.controller import build_http_endpoint

    async def hello() -> str:
        return "hello"

    handler, _ = build_http_endpoint(hello, "GET", Container(), ())
    scope = http_scope("/", path_params={})
    assert status_of(await run_asgi(handler, scope)) == 200
    requires_auth(hello)
    assert status_of(await run_asgi(handler, dict(scope))) == 401


@contextlib.asynccontextmanager
async def _started(app: Wirehall) -> AsyncIterator[Wirehall]:
    """The app started for the block, stopped after it."""
    await app.startup()
    try:
        yield app
    finally:
        await app.shutdown()
