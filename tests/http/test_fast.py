"""The HTTP fast path sends exactly the ASGI messages the general path sends.

Each endpoint is registered twice: without parameters, which `build_http_endpoint` serves
through `wirehall.http._fast.plain_endpoint`, and with an unused `Request` parameter,
which takes the general handler (DI scope, Request, `Response.__call__`). Both are
driven through the app with the same request, and their messages must be equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from wirehall import HTMLResponse, HTTPError, Request, Response, StreamingResponse, Wirehall, requires_auth
from wirehall.http._fast import DefaultHeaders, to_response
from wirehall.http.response import JSONResponse, PlainTextResponse
from wirehall.security.headers import SecurityHeadersMiddleware
from wirehall.types import Message

from ._scopes import http_scope, run_asgi


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
    differ = {}
    for name in [*RESULTS, *FAILURES, "private"]:
        fast = await _messages(app, f"/fast/{name}", method, scheme)
        general = await _messages(app, f"/general/{name}", method, scheme)
        assert fast[0]["type"] == "http.response.start", name
        if fast != general:
            differ[name] = (fast, general)
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
