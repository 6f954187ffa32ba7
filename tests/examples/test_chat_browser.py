"""The chat page in headless Chromium against a real server: two people, escaping, reconnecting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.examples.chat_server import ROOT, ChatServer

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> <b>bold?</b>'


@pytest.fixture
def server(tmp_path: Path, unused_port: int, server_ws: str) -> Iterator[ChatServer]:
    chat = ChatServer(
        unused_port, f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log", ws=server_ws
    )
    chat.start()
    try:
        yield chat
    finally:
        chat.stop()


async def join(page: Any, url: str, name: str, room: str) -> None:
    from playwright.async_api import expect

    await page.goto(url)
    await page.get_by_test_id("name").fill(name)
    await page.get_by_test_id("room").fill(room)
    await page.get_by_test_id("join").click()
    await expect(page.get_by_test_id("status")).to_have_text("connected", timeout=15_000)


async def say(page: Any, text: str) -> None:
    await page.get_by_test_id("text").fill(text)
    await page.get_by_test_id("send").click()


async def test_two_people_chat_escape_and_reconnect(server: ChatServer, chromium_path: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            ann_context = await browser.new_context(viewport={"width": 1100, "height": 720})
            # bob: a phone-sized window in dark mode, to see that the page holds up there too
            bob_context = await browser.new_context(
                viewport={"width": 400, "height": 760}, color_scheme="dark"
            )
            ann, bob = await ann_context.new_page(), await bob_context.new_page()
            problems: list[str] = []
            for page in (ann, bob):
                page.on("pageerror", lambda error: problems.append(str(error)))

            await ann.goto(server.http_url + "/")
            await expect(ann.get_by_test_id("status")).not_to_have_text("connected")
            await ann.screenshot(path=str(ARTIFACTS / "chat-start.png"))
            await join(ann, server.http_url + "/", "ann", "lobby")
            await join(bob, server.http_url + "/", "bob", "lobby")
            for page in (ann, bob):
                people = page.get_by_test_id("users").locator("> *")
                await expect(people).to_have_text(["ann", "bob"], timeout=10_000)

            await say(ann, "hello from ann")
            await say(bob, "hi ann, bob here")
            for page in (ann, bob):
                messages = page.get_by_test_id("messages").locator("> *")
                await expect(messages).to_have_count(2, timeout=10_000)
                await expect(messages.nth(0)).to_contain_text("ann")
                await expect(messages.nth(0)).to_contain_text("hello from ann")
                await expect(messages.nth(1)).to_contain_text("bob")
                await expect(messages.nth(1)).to_contain_text("hi ann, bob here")

            # Markup a user types is shown as text, never run or rendered.
            await say(bob, HOSTILE)
            hostile = ann.get_by_test_id("messages").locator("> *").nth(2)
            await expect(hostile).to_contain_text(HOSTILE, timeout=10_000)
            assert await ann.get_by_test_id("messages").locator("script, img, b").count() == 0
            assert await ann.evaluate("window.pwned") is None
            await ann.screenshot(path=str(ARTIFACTS / "chat-two-people.png"))

            # The server restarts on the same port and database; the pages reconnect by
            # themselves and ask only for what they missed.
            await asyncio.to_thread(server.stop)
            for page in (ann, bob):
                await expect(page.get_by_test_id("status")).not_to_have_text("connected", timeout=10_000)
            await ann.screenshot(path=str(ARTIFACTS / "chat-offline.png"))
            await asyncio.to_thread(server.start)
            async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as http:
                response = await http.post(
                    "/api/rooms/lobby/messages", json={"user": "cid", "text": "posted while you were away"}
                )
                assert response.status_code == 201
            for page in (ann, bob):
                await expect(page.get_by_test_id("status")).to_have_text("connected", timeout=20_000)
                messages = page.get_by_test_id("messages").locator("> *")
                await expect(messages).to_have_count(4, timeout=10_000)  # nothing twice
                await expect(messages.nth(3)).to_contain_text("posted while you were away")
                await expect(messages.nth(3)).to_contain_text("cid")
                await expect(page.get_by_test_id("users").locator("> *")).to_have_text(
                    ["ann", "bob"], timeout=10_000
                )
            await say(ann, "back again")
            for page in (ann, bob):
                await expect(page.get_by_test_id("messages").locator("> *").nth(4)).to_contain_text(
                    "back again", timeout=10_000
                )
            await ann.wait_for_timeout(300)  # let the arrival animation finish
            await ann.screenshot(path=str(ARTIFACTS / "chat-after-restart.png"))
            await bob.screenshot(path=str(ARTIFACTS / "chat-phone-dark.png"))
            assert problems == []
        finally:
            await browser.close()
    assert "since=" in server.log(), "the reconnecting pages did not ask for what they missed"
    assert '"GET /wirehall.js HTTP/1.1" 200' in server.log(), "the page runs on wirehall.js"


async def test_a_refused_join_is_shown_as_refused_and_not_retried(
    tmp_path: Path, unused_port: int, chromium_path: str, monkeypatch: pytest.MonkeyPatch, server_ws: str
) -> None:
    from playwright.async_api import async_playwright, expect

    # One connection per address: a second tab's join is refused (429), which a page cannot
    # tell from a dropped connection by the socket alone.
    monkeypatch.setenv("CHAT_MAX_CONNECTIONS_PER_ADDRESS", "1")
    chat = ChatServer(
        unused_port, f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", tmp_path / "server.log", ws=server_ws
    )
    chat.start()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context()
                first, second = await context.new_page(), await context.new_page()
                await join(first, chat.http_url + "/", "ann", "lobby")
                await second.goto(chat.http_url + "/")
                await second.get_by_test_id("name").fill("bob")
                await second.get_by_test_id("room").fill("lobby")
                await second.get_by_test_id("join").click()
                await expect(second.get_by_test_id("status")).to_have_text("refused", timeout=15_000)
                await expect(second.get_by_role("alert")).to_contain_text("refused to let bob join #lobby")
                tries = chat.log().count("user=bob")
                await second.wait_for_timeout(2_500)  # a page that retried would have tried again by now
                await expect(second.get_by_test_id("status")).to_have_text("refused")
                assert chat.log().count("user=bob") == tries
                await expect(first.get_by_test_id("status")).to_have_text("connected")
            finally:
                await browser.close()
    finally:
        chat.stop()
