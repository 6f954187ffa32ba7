"""Generated requests against a small app: never a 500, and every 4xx is a JSON `{"error": ...}`.

The app is started once per module; each example is one request driven straight through
the ASGI interface with a scope like uvicorn builds (decoded path, raw query bytes,
lower-cased latin-1 headers), so nothing in between normalises the input first.
"""

from __future__ import annotations

import asyncio
import logging
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirehall import HTTPController, Request, Response, Wirehall
from wirehall.http.forms import UploadFile
from wirehall.types import Message

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Order(msgspec.Struct):
    item: str
    quantity: int
    note: str | None = None


def build_app(static_dir: Path) -> Wirehall:
    app = Wirehall(backplane="memory://", max_body_size=64 * 1024)

    @app.get("/items/{id:int}")
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    @app.get("/prices/{x:float}")
    async def price(x: float) -> dict[str, float]:
        return {"x": x}

    @app.get("/keys/{key:uuid}")
    async def key(key: Any) -> dict[str, str]:
        return {"key": str(key)}

    @app.get("/files/{rest:path}")
    async def files(rest: str) -> dict[str, str]:
        return {"rest": rest}

    @app.route("/rooms/{room}", methods=["GET", "POST"])
    async def room(room: str, request: Request) -> dict[str, Any]:
        return {
            "room": room,
            "query": request.query.multi_items(),
            "cookies": request.cookies,
            "headers": len(request.headers),
            "url": str(request.url),
        }

    @app.post("/json")
    async def echo_json(request: Request) -> dict[str, Any]:
        return {"json": await request.json()}

    @app.post("/orders")
    async def orders(request: Request) -> tuple[Order, int]:
        return await request.json_as(Order), 201

    @app.post("/form")
    async def form(request: Request) -> dict[str, Any]:
        data = await request.form(max_files=5, max_fields=50)
        out: dict[str, Any] = {}
        for name, value in data.multi_items():
            out[name] = (await value.read()).hex() if isinstance(value, UploadFile) else value
        return out

    @app.route("/ctl/{id:int}")
    class Thing(HTTPController):
        async def get(self, id: int) -> dict[str, int]:
            return {"id": id}

        async def put(self, id: int) -> Response:
            data = await self.request.json()
            return self.send_json({"id": id, "data": data})

        async def delete(self, id: int) -> None:
            return None

    app.static("/static", static_dir)
    return app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.Runner, Wirehall]]:
    static_dir = tmp_path_factory.mktemp("static")
    (static_dir / "site.css").write_text("body{}")
    (static_dir / "sub").mkdir()
    (static_dir / "sub" / "a.txt").write_text("a")
    app = build_app(static_dir)
    with asyncio.Runner() as runner:
        runner.run(app.startup())
        try:
            yield runner, app
        finally:
            runner.run(app.shutdown())


async def request(
    app: Wirehall,
    method: str,
    path: str,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    chunk: int = 0,
) -> tuple[int, dict[str, str], bytes]:
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk and body else [body]
    messages: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    raw_headers = [(b"host", b"testserver"), *(headers or [])]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    sent: list[Message] = []

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert bodies, "no body message"
    assert not bodies[-1].get("more_body", False), "the response never ended"
    response_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in starts[0]["headers"]}
    return starts[0]["status"], response_headers, b"".join(m.get("body", b"") for m in bodies)


def check(method: str, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:300])
    if 400 <= status < 500 and method != "HEAD":
        assert headers.get("content-type") == "application/json", (status, headers)
        decoded = msgspec.json.decode(body)
        assert isinstance(decoded, dict)
        assert isinstance(decoded.get("error"), str), decoded


def run(served: tuple[asyncio.Runner, Wirehall], method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
    runner, app = served
    status, headers, body = runner.run(request(app, method, path, **kwargs))
    check(method, status, headers, body)
    return status, body


# strategies ------------------------------------------------------------------------

METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
PREFIXES = st.sampled_from(
    [
        "/items/",
        "/prices/",
        "/keys/",
        "/files/",
        "/rooms/",
        "/json",
        "/orders",
        "/form",
        "/ctl/",
        "/static/",
        "/",
        "",
    ]
)
SEGMENT = st.one_of(
    st.text(string.ascii_letters + string.digits + "-._~%+:@!$&'()*,;=", max_size=12),
    st.sampled_from(["..", ".", "", "%2e%2e", "%00", "\\", "\x00", "12345678-1234-5678-1234-567812345678"]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=8).filter(lambda t: "/" not in t),
)
PATHS = st.builds(
    lambda prefix, parts: "/" + (prefix + "/".join(parts)).lstrip("/"),
    PREFIXES,
    st.lists(SEGMENT, max_size=4),
)

TOKEN_CHARS = "!#$%&'*+-.^_`|~" + string.ascii_lowercase + string.digits
HEADER_NAMES = st.one_of(
    st.text(TOKEN_CHARS, min_size=1, max_size=20),
    st.sampled_from(
        [
            "content-type",
            "cookie",
            "accept",
            "range",
            "if-none-match",
            "if-modified-since",
            "if-range",
            "origin",
            "x-forwarded-for",
            "authorization",
        ]
    ),
).filter(lambda name: name not in ("host", "content-length", "transfer-encoding"))
HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60),
    st.sampled_from(
        [
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "application/json",
            "bytes=0-3",
            "bytes=-0",
            "bytes=99999-",
            'W/"x", *',
            "a=1; b",
            "Thu, 01 Jan 1970 00:00:00 GMT",
        ]
    ),
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6).map(
    lambda pairs: [(k.lower().encode("latin-1"), v.strip().encode("latin-1")) for k, v in pairs]
)
QUERIES = st.one_of(
    st.binary(max_size=60),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8")
    ),
    st.sampled_from([b"a=%zz", b"a=%", b"&&&", b"=x", b"a=1&a=2", b"%ff%fe=%c3"]),
)


def _json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=12,
    )


JSON_BODIES = st.one_of(
    _json_values().map(msgspec.json.encode),
    st.fixed_dictionaries(
        {
            "item": st.one_of(st.text(max_size=5), st.integers()),
            "quantity": st.one_of(st.integers(), st.text(max_size=3)),
        },
        optional={"note": st.one_of(st.none(), st.text(max_size=5), st.integers()), "extra": st.integers()},
    ).map(msgspec.json.encode),
    st.binary(max_size=80),
    # nesting far deeper than any decoder recurses (fixed depths: near the limit the outcome
    # would depend on the stack depth of the caller, and hypothesis would call that flaky)
    st.sampled_from([20_000, 60_000]).map(lambda depth: b"[" * depth),
    st.sampled_from([20_000]).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(min_value=1, max_value=50).map(lambda depth: b"[" * depth + b"]" * depth),
)


def _part(name: str, filename: str | None, content: bytes) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return b"--xyz\r\n" + disposition.encode("utf-8") + b"\r\n\r\n" + content + b"\r\n"


PARTS = st.lists(
    st.builds(
        _part,
        st.text(string.ascii_letters, max_size=6),
        st.one_of(st.none(), st.text(string.ascii_letters + ".", max_size=8)),
        st.binary(max_size=40),
    ),
    max_size=7,
)
MULTIPART_BODIES = st.builds(
    lambda parts, ending, cut: (b"".join(parts) + ending)[: cut if cut else None],
    PARTS,
    st.sampled_from([b"--xyz--\r\n", b"--xyz--", b"", b"--xy", b"garbage"]),
    st.one_of(st.just(0), st.integers(min_value=1, max_value=400)),
)


# the properties --------------------------------------------------------------------


@FUZZ
@given(method=METHODS, path=PATHS)
def test_generated_paths(served: tuple[asyncio.Runner, Wirehall], method: str, path: str) -> None:
    run(served, method, path)


@FUZZ
@given(
    method=METHODS,
    path=st.sampled_from(["/rooms/lobby", "/json", "/static/site.css", "/form", "/ctl/1"]),
    headers=HEADERS,
)
def test_generated_headers(
    served: tuple[asyncio.Runner, Wirehall], method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    run(served, method, path, headers=headers, body=b'{"a": 1}' if method in ("POST", "PUT") else b"")


@FUZZ
@given(path=st.sampled_from(["/rooms/lobby", "/items/3", "/static/site.css", "/nowhere"]), query=QUERIES)
def test_generated_query_strings(served: tuple[asyncio.Runner, Wirehall], path: str, query: bytes) -> None:
    status, body = run(served, "GET", path, query=query)
    if path == "/rooms/lobby":
        assert status == 200
        assert msgspec.json.decode(body)["room"] == "lobby"


@FUZZ
@given(
    path=st.sampled_from(["/json", "/orders", "/ctl/7"]),
    body=JSON_BODIES,
    chunk=st.sampled_from([0, 1, 7, 1024]),
)
def test_generated_json_bodies(
    served: tuple[asyncio.Runner, Wirehall], path: str, body: bytes, chunk: int
) -> None:
    method = "PUT" if path.startswith("/ctl") else "POST"
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    status, _ = run(served, method, path, headers=headers, body=body, chunk=chunk)
    assert status in (200, 201, 400, 413, 422)


@FUZZ
@given(body=MULTIPART_BODIES, chunk=st.sampled_from([0, 1, 5, 64]))
def test_generated_multipart_bodies(served: tuple[asyncio.Runner, Wirehall], body: bytes, chunk: int) -> None:
    headers = [(b"content-type", b"multipart/form-data; boundary=xyz")]
    status, _ = run(served, "POST", "/form", headers=headers, body=body, chunk=chunk)
    assert status in (200, 400, 413)


@FUZZ
@given(
    content_type=HEADER_VALUES,
    body=st.one_of(st.binary(max_size=100), st.text(max_size=60).map(lambda t: t.encode("utf-8"))),
)
def test_generated_form_bodies_with_any_content_type(
    served: tuple[asyncio.Runner, Wirehall], content_type: str, body: bytes
) -> None:
    headers = [(b"content-type", content_type.strip().encode("latin-1"))]
    status, _ = run(served, "POST", "/form", headers=headers, body=body)
    assert status in (200, 400, 413, 415)


def test_oversized_bodies_are_413(served: tuple[asyncio.Runner, Wirehall]) -> None:
    limit = 64 * 1024
    big_json = b'"' + b"x" * limit + b'"'
    big_form = b"a=" + b"x" * limit
    big_multipart = _part("f", "big.bin", b"x" * limit) + b"--xyz--\r\n"
    for path, content_type, body in (
        ("/json", b"application/json", big_json),
        ("/orders", b"application/json", big_json),
        ("/form", b"application/x-www-form-urlencoded", big_form),
        ("/form", b"multipart/form-data; boundary=xyz", big_multipart),
    ):
        for declared in (True, False):
            headers = [(b"content-type", content_type)]
            if declared:
                headers.append((b"content-length", str(len(body)).encode()))
            status, _ = run(served, "POST", path, headers=headers, body=body, chunk=4096)
            assert status == 413, (path, content_type, declared)


@pytest.fixture(autouse=True)
def _quiet_expected_errors(caplog: pytest.LogCaptureFixture) -> None:
    # a 500 fails the property anyway; keep the traceback of one out of the other examples' output
    caplog.set_level(logging.CRITICAL, logger="wirehall")
