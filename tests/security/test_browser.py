"""A real browser against uvicorn: the default CSP, the WebSocket origin check, CSRF forms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
async def page(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        try:
            context = await browser.new_context()
            yield await context.new_page()
        finally:
            await browser.close()


async def status_text(page: Any) -> str:
    locator = page.locator("#status")
    for _ in range(100):
        text = await locator.text_content()
        if text:
            return str(text)
        await asyncio.sleep(0.05)
    raise AssertionError("the page never reported a WebSocket status")


async def test_default_csp_allows_own_script_and_websocket_blocks_inline(server: int, page: Any) -> None:
    response = await page.goto(f"http://127.0.0.1:{server}/")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert await status_text(page) == "open"
    assert await page.locator("#inline").text_content() == ""  # inline script refused


async def test_cross_site_page_cannot_open_a_websocket(server: int, page: Any) -> None:
    # localhost and 127.0.0.1 are different origins for the browser
    await page.goto(f"http://localhost:{server}/evil?target=127.0.0.1:{server}")
    assert (await status_text(page)).startswith("closed:")
    # the same page aimed at its own origin connects, so the refusal was the origin check
    await page.goto(f"http://localhost:{server}/evil?target=localhost:{server}")
    assert await status_text(page) == "open"


async def test_form_with_csrf_field_posts_and_without_is_refused(server: int, page: Any) -> None:
    await page.goto(f"http://127.0.0.1:{server}/")
    await page.click("#send")
    await page.wait_for_selector("#result", timeout=10_000)
    assert await page.locator("#result").text_content() == "got hello"
    await page.goto(f"http://127.0.0.1:{server}/")
    async with page.expect_response(lambda r: r.url.endswith("/submit")) as answer:
        await page.click("#send-tokenless")
    response = await answer.value
    assert response.status == 403
    assert await response.json() == {"error": "CSRF token missing or invalid"}
