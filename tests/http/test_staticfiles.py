from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from wirehall.http.staticfiles import StaticFiles
from wirehall.types import Message

from ._scopes import body_of, http_scope, run_asgi, status_of


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """tmp/public (served) next to tmp/secret.txt (must never be served)."""
    public = tmp_path / "public"
    (public / "css").mkdir(parents=True)
    (public / "css" / "site.css").write_text("body{}")
    (public / "hello.txt").write_text("hello")
    (public / "docs").mkdir()
    (public / "docs" / "index.html").write_text("<p>docs</p>")
    (public / "index.html").write_text("<p>home</p>")
    (public / "with space.txt").write_text("spaced")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    (tmp_path / "public-private").mkdir()
    (tmp_path / "public-private" / "key.txt").write_text("TOP SECRET")
    return public


def client(app: StaticFiles) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_serves_files_below_the_directory(site: Path) -> None:
    async with client(StaticFiles(site)) as c:
        css = await c.get("/css/site.css")
        hello = await c.get("/hello.txt")
        spaced = await c.get("/with%20space.txt")
        dotted = await c.get("/./css/./site.css")
    assert (css.status_code, css.text) == (200, "body{}")
    assert css.headers["content-type"].startswith("text/css")
    assert "etag" in css.headers
    assert hello.text == "hello"
    assert spaced.text == "spaced"
    assert dotted.text == "body{}"


async def test_conditional_and_range_requests_work(site: Path) -> None:
    async with client(StaticFiles(site)) as c:
        first = await c.get("/hello.txt")
        cached = await c.get("/hello.txt", headers={"If-None-Match": first.headers["etag"]})
        partial = await c.get("/hello.txt", headers={"Range": "bytes=1-2"})
        head = await c.head("/hello.txt")
    assert cached.status_code == 304
    assert (partial.status_code, partial.text) == (206, "el")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "5")


async def test_missing_files_and_directories_are_json_404(site: Path) -> None:
    async with client(StaticFiles(site)) as c:
        for path in ("/nope.txt", "/css", "/css/", "/"):
            response = await c.get(path)
            assert response.status_code == 404, path
            assert response.json() == {"error": "file not found"}


async def test_html_mode_serves_index_files(site: Path) -> None:
    async with client(StaticFiles(site, html=True)) as c:
        root = await c.get("/")
        docs = await c.get("/docs/")
        docs_no_slash = await c.get("/docs")
        no_index = await c.get("/css/")
    assert root.text == "<p>home</p>"
    assert docs.text == "<p>docs</p>"
    assert docs_no_slash.text == "<p>docs</p>"
    assert no_index.status_code == 404


async def test_only_get_and_head(site: Path) -> None:
    async with client(StaticFiles(site)) as c:
        response = await c.post("/hello.txt")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert "error" in response.json()


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/css/../../secret.txt",
        "/..",
        "/../public-private/key.txt",
        "/..\\secret.txt",
        "/css\\..\\..\\secret.txt",
        "/hello.txt\x00.png",
        "//../secret.txt",
    ],
)
async def test_traversal_in_the_decoded_path_is_refused(site: Path, path: str) -> None:
    sent = await run_asgi(StaticFiles(site), http_scope(path))
    assert status_of(sent) == 404
    assert b"SECRET" not in body_of(sent)


@pytest.mark.parametrize(
    "url",
    [
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2E%2E/secret.txt",
        "/css/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/%2e%2e%5csecret.txt",
        "/%2e%2e/public-private/key.txt",
    ],
)
async def test_encoded_traversal_is_refused(site: Path, url: str) -> None:
    async with client(StaticFiles(site)) as c:
        response = await c.get(url)
    assert response.status_code == 404
    assert "SECRET" not in response.text


async def test_absolute_paths_stay_inside_the_directory(site: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    sent = await run_asgi(StaticFiles(site), http_scope(str(secret)))
    assert status_of(sent) == 404
    sent = await run_asgi(StaticFiles(site), http_scope("//" + str(secret).lstrip("/")))
    assert status_of(sent) == 404
    assert StaticFiles(site).resolve(str(secret)) != str(secret)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
async def test_symlinks_out_of_the_directory_are_refused(site: Path, tmp_path: Path) -> None:
    (site / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (site / "leakdir").symlink_to(tmp_path)
    (site / "alias.txt").symlink_to(site / "hello.txt")
    async with client(StaticFiles(site)) as c:
        leak = await c.get("/leak.txt")
        leakdir = await c.get("/leakdir/secret.txt")
        alias = await c.get("/alias.txt")
    assert leak.status_code == 404
    assert leakdir.status_code == 404
    assert "SECRET" not in leak.text + leakdir.text
    assert (alias.status_code, alias.text) == (200, "hello")


async def test_a_served_directory_that_is_itself_a_symlink_works(site: Path, tmp_path: Path) -> None:
    link = tmp_path / "link-to-public"
    link.symlink_to(site)
    async with client(StaticFiles(link)) as c:
        assert (await c.get("/hello.txt")).text == "hello"
        assert (await c.get("/%2e%2e/secret.txt")).status_code == 404


def test_a_missing_directory_is_refused_when_configured(tmp_path: Path) -> None:
    from wirehall.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no-such-dir"):
        StaticFiles(tmp_path / "no-such-dir")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigurationError, match=r"file\.txt"):
        StaticFiles(tmp_path / "file.txt")


def test_resolve(site: Path) -> None:
    static = StaticFiles(site)
    assert static.resolve("/css/site.css") == str(site.resolve() / "css" / "site.css")
    assert static.resolve("/../secret.txt") is None
    assert static.resolve("/a\x00b") is None
    assert static.resolve("/") == str(site.resolve())


async def test_websocket_scopes_are_closed(site: Path) -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await StaticFiles(site)({"type": "websocket", "path": "/x"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]
