"""wirehall.js in headless Chromium against a real `wirehall run` server (tests/_apps/wirehall_js_app.py):
reconnecting after a restart, resuming without a lost message, a readable refusal shown and not
retried, and its small pure functions; on both WebSocket paths."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._servers import stop_process, wait_until_serving

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WIREHALL = Path(sys.executable).with_name("wirehall")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
WAIT_MS = 15_000


class AppServer:
    """`wirehall run tests._apps.wirehall_js_app:app` on 127.0.0.1:`port`, stopped and started by PID."""

    def __init__(self, port: int, messages: Path, log_path: Path, ws: str) -> None:
        self.port = port
        self.ws = ws  # `--ws`: the WebSocket path (tests/conftest.py's server_ws)
        self.messages = messages
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "WIREHALL_JS_MESSAGES": str(self.messages), "PYTHONUNBUFFERED": "1"}
        command = [str(WIREHALL), "run", "tests._apps.wirehall_js_app:app", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--ws", self.ws, "--log-level", "info"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(self.process, self.url + "/healthz", timeout=30.0, log=self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout=20.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def server(tmp_path: Path, unused_port: int, server_ws: str) -> Iterator[AppServer]:
    app_server = AppServer(unused_port, tmp_path / "messages.jsonl", tmp_path / "server.log", server_ws)
    app_server.start()
    try:
        yield app_server
    finally:
        app_server.stop()


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any, url: str, problems: list[str]) -> Any:
    page = await (await browser.new_context()).new_page()
    page.on("pageerror", lambda error: problems.append(str(error)))
    await page.goto(url)
    return page


async def expect_messages(page: Any, texts: list[str]) -> None:
    from playwright.async_api import expect

    await expect(page.get_by_test_id("messages").locator("> li")).to_have_text(texts, timeout=WAIT_MS)


async def test_reconnects_after_a_restart_and_resumes_without_a_lost_message(
    server: AppServer, browser: Any
) -> None:
    from playwright.async_api import expect

    problems: list[str] = []
    ann = await open_page(browser, server.url + "/?user=ann", problems)
    bob = await open_page(browser, server.url + "/?user=bob", problems)
    for page in (ann, bob):
        await expect(page.get_by_test_id("status")).to_have_text("open", timeout=WAIT_MS)
    await ann.evaluate("say('one')")
    await bob.evaluate("say('two')")
    for page in (ann, bob):
        await expect_messages(page, ["1 ann: one", "2 bob: two"])

    # The server stops in the middle of the conversation: both pages notice and wait to retry.
    await asyncio.to_thread(server.stop)
    for page in (ann, bob):
        await expect(page.get_by_test_id("status")).to_have_text("waiting", timeout=WAIT_MS)
    # bob stays away (as a closed laptop would) while ann comes back and says more.
    await bob.evaluate("page.socket.close()")
    await asyncio.to_thread(server.start)
    await expect(ann.get_by_test_id("status")).to_have_text("open", timeout=WAIT_MS)
    await ann.evaluate("say('three')")
    await ann.evaluate("say('four')")
    await expect_messages(ann, ["1 ann: one", "2 bob: two", "3 ann: three", "4 ann: four"])

    # bob reconnects with what it saw last (`since=2`) and gets exactly what it missed.
    await bob.evaluate("page.socket.connect()")
    await expect(bob.get_by_test_id("status")).to_have_text("open", timeout=WAIT_MS)
    await expect_messages(bob, ["1 ann: one", "2 bob: two", "3 ann: three", "4 ann: four"])
    await bob.evaluate("say('five')")
    for page in (ann, bob):
        await expect_messages(
            page, ["1 ann: one", "2 bob: two", "3 ann: three", "4 ann: four", "5 bob: five"]
        )

    # (on a loaded machine a late pong may replace a connection once more: hence `in`, not [-1])
    ann_resumes = await ann.evaluate("page.resumes")
    assert ann_resumes[0] == {"attempt": 0, "reconnect": False, "since": 0}
    assert {"reconnect": True, "since": 2} in [
        {"reconnect": r["reconnect"], "since": r["since"]} for r in ann_resumes
    ]
    assert 2 in [r["since"] for r in await bob.evaluate("page.resumes")]
    assert "since=2" in server.log()
    for page in (ann, bob):
        assert await page.evaluate("page.repeats") == 0
        states = await page.evaluate("page.states")
        assert states[:2] == ["connecting", "open"]
        assert "waiting" in states
    # the application-level ping is answered while the connection is quiet
    await expect(ann.get_by_test_id("pongs")).not_to_have_text("0", timeout=WAIT_MS)
    assert problems == []


async def test_a_readable_refusal_is_shown_with_the_servers_reason_and_not_retried(
    server: AppServer, browser: Any
) -> None:
    from playwright.async_api import expect

    problems: list[str] = []
    page = await open_page(browser, server.url + "/?user=mallory", problems)
    await expect(page.get_by_test_id("status")).to_have_text("refused", timeout=WAIT_MS)
    await expect(page.get_by_test_id("reason")).to_have_text("that name is not allowed")
    # the handshake was accepted (so that the close can carry a reason), then closed at once
    assert await page.evaluate("page.states") == ["connecting", "open", "refused"]
    close = await page.evaluate("page.socket.lastClose")
    assert close == {
        "code": 4403,
        "reason": "that name is not allowed",
        "text": "that name is not allowed",
        "wasOpen": True,
    }
    # No retry is scheduled: the state stays `refused` until the page itself connects again.
    assert await page.evaluate("page.socket.retryAt") == 0
    assert server.log().count("WebSocket /ws?user=mallory") == 1
    # a good name on the same server still gets in
    other = await open_page(browser, server.url + "/?user=ann", problems)
    await expect(other.get_by_test_id("status")).to_have_text("open", timeout=WAIT_MS)
    await expect(page.get_by_test_id("status")).to_have_text("refused")
    assert server.log().count("WebSocket /ws?user=mallory") == 1
    assert problems == []


async def test_a_connection_whose_pings_go_unanswered_is_replaced(server: AppServer, browser: Any) -> None:
    from playwright.async_api import expect

    problems: list[str] = []
    # the page pings after 0.5 s of silence and gives up 3 s after that
    page = await open_page(browser, server.url + "/?user=deaf", problems)
    await expect(page.get_by_test_id("opened")).to_have_text("2", timeout=WAIT_MS)
    close = await page.evaluate("page.socket.lastClose")
    assert close["code"] == 1006
    assert close["text"] == "no answer from the server"
    assert (await page.evaluate("page.states"))[:4] == ["connecting", "open", "waiting", "connecting"]
    assert problems == []


async def test_backoff_final_closes_and_close_texts(server: AppServer, browser: Any) -> None:
    problems: list[str] = []
    page = await open_page(browser, server.url + "/?user=ann", problems)
    result = await page.evaluate(
        """async () => {
            const js = await import("/wirehall.js");
            const options = { initial: 500, max: 8000, factor: 2, jitter: 0.25 };
            const delays = (random) => [0, 1, 2, 3, 4, 5, 10].map((n) => js.backoffDelay(n, options, () => random));
            return {
                low: delays(0), high: delays(1), middle: delays(0.5),
                final: [3999, 4000, 4403, 4999, 5000, 1000, 1006, 1012].map((code) => js.isFinalClose(code)),
                texts: [js.describeClose(1012), js.describeClose(4403, "no"), js.describeClose(3001)],
            };
        }"""
    )
    assert result["middle"] == [500, 1000, 2000, 4000, 8000, 8000, 8000]
    assert result["low"] == [375, 750, 1500, 3000, 6000, 6000, 6000]
    assert result["high"] == [625, 1250, 2500, 5000, 10000, 10000, 10000]
    assert result["final"] == [False, True, True, True, False, False, False, False]
    assert result["texts"] == ["the server is restarting", "no", "the connection closed (code 3001)"]
    assert problems == []
