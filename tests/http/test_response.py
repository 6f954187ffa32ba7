from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import msgspec
import pytest

from wirehall.http.response import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
    error_response,
)
from wirehall.types import Receive, Scope, Send

from ._scopes import body_of, headers_of, http_scope, run_asgi, status_of


def serve(response: Response) -> httpx.AsyncClient:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await response(scope, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def fetch(response: Response, method: str = "GET", **kwargs: object) -> httpx.Response:
    async with serve(response) as client:
        return await client.request(method, "/", **kwargs)  # type: ignore[arg-type]


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Label:
    text: str


async def test_plain_response_bytes_and_headers() -> None:
    response = Response(b"\x00\x01", status=201, headers={"X-Thing": "1"}, media_type="application/x-custom")
    got = await fetch(response)
    assert got.status_code == 201
    assert got.content == b"\x00\x01"
    assert got.headers["x-thing"] == "1"
    assert got.headers["content-type"] == "application/x-custom"
    assert got.headers["content-length"] == "2"


async def test_text_and_html_are_utf8() -> None:
    text = await fetch(PlainTextResponse("héllo"))
    html = await fetch(HTMLResponse("<b>é</b>"))
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == "héllo"
    assert text.headers["content-length"] == str(len("héllo".encode()))
    assert html.headers["content-type"] == "text/html; charset=utf-8"
    assert html.text == "<b>é</b>"


def test_response_refuses_what_it_cannot_send() -> None:
    with pytest.raises(TypeError, match="pass str or bytes"):
        Response({"a": 1})


async def test_json_of_many_types() -> None:
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    content = {
        "point": Point(1, 2),
        "label": Label("x"),
        "when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "key": key,
        "list": [1, 2.5, None, True],
        "text": "é<>",
    }
    got = await fetch(JSONResponse(content, status=202))
    assert got.status_code == 202
    assert got.headers["content-type"] == "application/json"
    assert got.json() == {
        "point": {"x": 1, "y": 2},
        "label": {"text": "x"},
        "when": "2024-01-02T03:04:05Z",
        "key": str(key),
        "list": [1, 2.5, None, True],
        "text": "é<>",
    }


def test_json_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        JSONResponse({"x": object()})


async def test_redirect_defaults_to_307_and_quotes_the_location() -> None:
    got = await fetch(RedirectResponse("/caf\u00e9 menu?a=1&b=2#top"))
    assert got.status_code == 307
    assert got.headers["location"] == "/caf%C3%A9%20menu?a=1&b=2#top"
    assert got.content == b""
    other = await fetch(RedirectResponse("https://example.com/x", status=301))
    assert (other.status_code, other.headers["location"]) == (301, "https://example.com/x")


def test_redirect_cannot_inject_headers() -> None:
    response = RedirectResponse("/next\r\nSet-Cookie: evil=1")
    assert response.headers.getlist("location") == ["/next%0D%0ASet-Cookie:%20evil=1"]
    assert "set-cookie" not in response.headers


async def test_streaming_from_async_and_sync_iterables() -> None:
    async def agen() -> AsyncIterator[str | bytes]:
        yield "a"
        yield b"b"
        yield "é"

    def gen() -> Iterator[bytes]:
        yield b"1"
        yield b"2"

    got = await fetch(StreamingResponse(agen(), media_type="text/plain"))
    assert got.content == "abé".encode()
    assert "content-length" not in got.headers
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    sent = await run_asgi(StreamingResponse(gen(), headers={"X-A": "1"}), http_scope())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert [m["body"] for m in bodies] == [b"1", b"2", b""]
    assert [m.get("more_body", False) for m in bodies] == [True, True, False]
    assert ("x-a", "1") in headers_of(sent)


async def test_head_sends_headers_but_no_body() -> None:
    for response in (
        PlainTextResponse("hello"),
        StreamingResponse(iter([b"hello"])),
        JSONResponse({"a": 1}),
    ):
        sent = await run_asgi(response, http_scope(method="HEAD"))
        assert status_of(sent) == 200
        assert body_of(sent) == b""
    sent = await run_asgi(PlainTextResponse("hello"), http_scope(method="HEAD"))
    assert ("content-length", "5") in headers_of(sent)


@pytest.mark.parametrize("status", [204, 304, 101])
def test_no_content_length_where_there_is_no_body(status: int) -> None:
    assert "content-length" not in Response(b"", status).headers


def test_set_header_replaces_and_headers_view_reads() -> None:
    response = PlainTextResponse("x", headers={"Cache-Control": "no-store"})
    response.set_header("cache-control", "max-age=60")
    response.set_header("X-New", "1")
    assert response.headers.getlist("cache-control") == ["max-age=60"]
    assert response.headers["x-new"] == "1"
    assert response.headers["content-length"] == "1"
    assert repr(response) == "PlainTextResponse(status=200)"


def test_explicit_content_type_and_length_are_kept() -> None:
    response = PlainTextResponse("abc", headers={"Content-Type": "text/csv", "Content-Length": "3"})
    assert response.headers.getlist("content-type") == ["text/csv"]
    assert response.headers.getlist("content-length") == ["3"]


def test_add_default_headers_never_replaces() -> None:
    response = PlainTextResponse("x", headers={"X-Frame-Options": "SAMEORIGIN"})
    response.add_default_headers([(b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff")])
    assert response.headers.getlist("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_set_cookie_attributes() -> None:
    response = Response()
    response.set_cookie("sid", "a b;c", max_age=60, domain="example.com", secure=True, samesite="strict")
    response.set_cookie("plain", "v", httponly=False, samesite=None, path="/app")
    response.set_cookie("dated", "v", expires=0)
    cookies = response.headers.getlist("set-cookie")
    assert (
        cookies[0]
        == "sid=a%20b%3Bc; Path=/; Max-Age=60; Domain=example.com; Secure; HttpOnly; SameSite=Strict"
    )
    assert cookies[1] == "plain=v; Path=/app"
    assert cookies[2] == "dated=v; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"


async def test_cookies_reach_an_http_client() -> None:
    response = PlainTextResponse("ok")
    response.set_cookie("theme", "dark")
    response.delete_cookie("old", path="/")
    async with serve(response) as client:
        got = await client.get("/")
        assert client.cookies.get("theme") == "dark"
        assert "old" not in client.cookies
    deleted = [c for c in got.headers.get_list("set-cookie") if c.startswith("old=")]
    assert deleted == [
        "old=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
    ]


def test_error_response_is_json_with_error() -> None:
    response = error_response(404)
    assert response.status == 404
    assert response.body == b'{"error":"Not Found"}'
    assert error_response(499).body == b'{"error":"error"}'
    with_headers = error_response(405, "nope", {"Allow": "GET"})
    assert with_headers.headers["allow"] == "GET"
    assert with_headers.body == b'{"error":"nope"}'


# files --------------------------------------------------------------------------

CONTENT = b"0123456789abcdefghij"  # 20 bytes


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.txt"
    path.write_bytes(CONTENT)
    stamp = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    os.utime(path, (stamp, stamp))
    return path


async def test_file_is_sent_with_validators(data_file: Path) -> None:
    got = await fetch(FileResponse(data_file))
    assert got.status_code == 200
    assert got.content == CONTENT
    assert got.headers["content-length"] == "20"
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["last-modified"] == "Wed, 01 May 2024 12:00:00 GMT"
    etag = got.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    again = await fetch(FileResponse(data_file))
    assert again.headers["etag"] == etag


async def test_etag_changes_when_the_file_does(data_file: Path) -> None:
    before = (await fetch(FileResponse(data_file))).headers["etag"]
    await asyncio.to_thread(data_file.write_bytes, CONTENT + b"!")
    after = (await fetch(FileResponse(data_file))).headers["etag"]
    assert before != after


async def test_large_file_is_streamed_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    content = os.urandom(200 * 1024)
    path.write_bytes(content)
    sent = await run_asgi(FileResponse(path), http_scope())
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) > 1
    assert b"".join(m["body"] for m in bodies) == content
    assert bodies[-1].get("more_body", False) is False


async def test_file_media_type_and_download_name(data_file: Path, tmp_path: Path) -> None:
    css = tmp_path / "site.css"
    css.write_text("a{}")
    unknown = tmp_path / "blob.zzzunknown"
    unknown.write_bytes(b"?")
    assert (await fetch(FileResponse(css))).headers["content-type"].startswith("text/css")
    assert (await fetch(FileResponse(unknown))).headers["content-type"] == "application/octet-stream"
    download = await fetch(FileResponse(data_file, filename="résumé 2024.pdf"))
    assert download.headers["content-type"] == "application/pdf"
    assert (
        download.headers["content-disposition"] == "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%202024.pdf"
    )


async def test_missing_file_or_directory_is_a_json_404(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.txt", tmp_path):
        got = await fetch(FileResponse(path))
        assert got.status_code == 404
        assert got.json() == {"error": "file not found"}


async def test_head_of_a_file_has_headers_but_no_body(data_file: Path) -> None:
    got = await fetch(FileResponse(data_file), "HEAD")
    assert got.status_code == 200
    assert got.content == b""
    assert got.headers["content-length"] == "20"


async def test_if_none_match_gives_304(data_file: Path) -> None:
    etag = (await fetch(FileResponse(data_file))).headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        got = await fetch(FileResponse(data_file), headers={"If-None-Match": header})
        assert got.status_code == 304, header
        assert got.content == b""
        assert got.headers["etag"] == etag
        assert "content-type" not in got.headers
    stale = await fetch(FileResponse(data_file), headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200
    assert stale.content == CONTENT


async def test_if_modified_since(data_file: Path) -> None:
    modified = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    same = await fetch(
        FileResponse(data_file), headers={"If-Modified-Since": formatdate(modified, usegmt=True)}
    )
    later = await fetch(
        FileResponse(data_file), headers={"If-Modified-Since": formatdate(modified + 3600, usegmt=True)}
    )
    earlier = await fetch(
        FileResponse(data_file), headers={"If-Modified-Since": formatdate(modified - 3600, usegmt=True)}
    )
    garbage = await fetch(FileResponse(data_file), headers={"If-Modified-Since": "not a date"})
    assert (same.status_code, later.status_code) == (304, 304)
    assert (earlier.status_code, garbage.status_code) == (200, 200)


async def test_if_none_match_wins_over_if_modified_since(data_file: Path) -> None:
    modified = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC).timestamp()
    got = await fetch(
        FileResponse(data_file),
        headers={"If-None-Match": '"other"', "If-Modified-Since": formatdate(modified, usegmt=True)},
    )
    assert got.status_code == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-4", 0, 5),
        ("bytes=5-9", 5, 10),
        ("bytes=15-", 15, 20),
        ("bytes=-3", 17, 20),
        ("bytes=-100", 0, 20),
        ("bytes=10-1000", 10, 20),
        ("bytes=19-19", 19, 20),
        ("Bytes = 0-0", 0, 1),
    ],
)
async def test_range_gives_206(data_file: Path, header: str, start: int, end: int) -> None:
    got = await fetch(FileResponse(data_file), headers={"Range": header})
    assert got.status_code == 206
    assert got.content == CONTENT[start:end]
    assert got.headers["content-range"] == f"bytes {start}-{end - 1}/20"
    assert got.headers["content-length"] == str(end - start)


@pytest.mark.parametrize("header", ["bytes=20-", "bytes=25-30", "bytes=-0", "bytes=5-2"])
async def test_unsatisfiable_range_gives_416(data_file: Path, header: str) -> None:
    got = await fetch(FileResponse(data_file), headers={"Range": header})
    assert got.status_code == 416
    assert got.headers["content-range"] == "bytes */20"


async def test_unsatisfiable_range_says_why_in_json(data_file: Path) -> None:
    got = await fetch(FileResponse(data_file), headers={"Range": "bytes=50-"})
    assert got.status_code == 416
    assert got.headers["content-type"] == "application/json"
    assert "error" in got.json()


@pytest.mark.parametrize("header", ["items=0-4", "bytes=0-1,5-6", "bytes=abc", "bytes=a-b", "bytes=1"])
async def test_ranges_we_do_not_serve_give_the_whole_file(data_file: Path, header: str) -> None:
    got = await fetch(FileResponse(data_file), headers={"Range": header})
    assert got.status_code == 200
    assert got.content == CONTENT


async def test_if_range(data_file: Path) -> None:
    first = await fetch(FileResponse(data_file))
    matching = await fetch(
        FileResponse(data_file), headers={"Range": "bytes=0-1", "If-Range": first.headers["etag"]}
    )
    by_date = await fetch(
        FileResponse(data_file), headers={"Range": "bytes=0-1", "If-Range": first.headers["last-modified"]}
    )
    stale = await fetch(FileResponse(data_file), headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert (matching.status_code, matching.content) == (206, b"01")
    assert by_date.status_code == 206
    assert (stale.status_code, stale.content) == (200, CONTENT)


async def test_range_with_head(data_file: Path) -> None:
    got = await fetch(FileResponse(data_file), "HEAD", headers={"Range": "bytes=0-4"})
    assert got.status_code == 206
    assert got.content == b""
    assert got.headers["content-length"] == "5"
