"""The docs page and its assets: served by the app itself, under its default CSP; in Chromium
against a real server it renders both documents offline, without a CSP violation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.examples.chat_server import ChatServer
from tests.examples.test_chat_browser import CHROMIUM_ARGS
from wirehall import ConfigurationError, Wirehall
from wirehall.security.headers import DEFAULT_CONTENT_SECURITY_POLICY
from wirehall.testing import SyncTestClient


def new_app(**options: Any) -> Wirehall:
    app = Wirehall(backplane="memory://", title='Shop <"&>', **options)

    @app.get("/items/{id:int}")
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    return app


def test_the_page_is_html_under_the_default_csp_and_names_the_documents() -> None:
    with SyncTestClient(new_app()) as client:
        page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == DEFAULT_CONTENT_SECURITY_POLICY
    assert 'data-openapi="/openapi.json"' in page.text
    assert 'data-asyncapi="/asyncapi.json"' in page.text
    assert "Shop &lt;&quot;&amp;&gt;" in page.text  # the title is escaped
    assert "<script>" not in page.text  # no inline script: the CSP would block it


def test_the_assets_are_served_by_the_app_and_name_no_other_host() -> None:
    with SyncTestClient(new_app()) as client:
        page = client.get("/docs").text
        for url, media_type in (("/docs/docs.js", "text/javascript"), ("/docs/docs.css", "text/css")):
            assert f'"{url}"' in page
            asset = client.get(url)
            assert asset.status_code == 200
            assert asset.headers["content-type"].startswith(media_type)
            assert not re.search(r"https?://", asset.text), url  # nothing from a CDN
            assert ".innerHTML" not in asset.text  # text only: a schema's strings are never markup
            assert not re.search(r"\beval\(|new Function", asset.text)
    assert not re.search(r"(src|href)=\"https?://", page)


def test_a_mounted_app_serves_its_page_below_its_prefix() -> None:
    outer = Wirehall(backplane="memory://", docs_url=None, openapi_url=None, asyncapi_url=None)
    outer.mount("/shop", new_app())
    with SyncTestClient(outer) as client:
        page = client.get("/shop/docs").text
        assert 'data-openapi="/shop/openapi.json"' in page
        assert '"/shop/docs/docs.js"' in page
        assert client.get("/shop/docs/docs.js").status_code == 200


def test_a_document_turned_off_is_left_out_of_the_page() -> None:
    with SyncTestClient(new_app(asyncapi_url=None, docs_url="/api/docs")) as client:
        assert client.get("/docs").status_code == 404
        page = client.get("/api/docs").text
        assert 'data-asyncapi=""' in page
        assert '"/api/docs/docs.css"' in page


@pytest.mark.parametrize("url", ["docs", "/docs/", "/docs/{x}"])
def test_a_bad_url_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ConfigurationError, match="docs_url"):
        Wirehall(backplane="memory://", docs_url=url)


# the page in a browser ---------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, unused_port: int) -> Iterator[ChatServer]:
    chat = ChatServer(unused_port, f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log")
    chat.start()
    try:
        yield chat
    finally:
        chat.stop()


@pytest.mark.browser
async def test_the_chat_docs_page_renders_offline_without_csp_violations(
    server: ChatServer, chromium_path: str
) -> None:
    from playwright.async_api import async_playwright, expect

    elsewhere: list[str] = []
    problems: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()

            async def only_the_app(route: Any) -> None:
                if route.request.url.startswith(server.http_url):
                    await route.continue_()
                else:  # offline: anything else fails, and is noted
                    elsewhere.append(route.request.url)
                    await route.abort()

            await page.route("**/*", only_the_app)

            def on_console(message: Any) -> None:
                if message.type == "error":
                    problems.append(message.text)

            def on_error(error: Any) -> None:
                problems.append(str(error))

            page.on("console", on_console)
            page.on("pageerror", on_error)
            await page.goto(server.http_url + "/docs")
            await expect(page.locator("body[data-ready=yes]")).to_have_count(1, timeout=15_000)
            operations = page.get_by_test_id("operation")
            # the chat's five HTTP operations and its WebSocket channel
            await expect(operations).to_have_count(6)
            await expect(page.locator("#http")).to_contain_text("/api/rooms/{room}/messages")
            await expect(page.locator("#websocket")).to_contain_text("/ws/{room}")
            await expect(page.locator("#schemas")).to_contain_text("Welcome")
            await operations.first.locator("summary").click()
            await expect(operations.first).to_contain_text("operationId")
            violations = await page.evaluate("document.querySelectorAll('.error').length")
        finally:
            await browser.close()
    assert elsewhere == []
    assert problems == []  # a CSP violation is a console error in Chromium
    assert violations == 0
