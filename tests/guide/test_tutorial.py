"""The tutorial as a reader follows it: its app served by `wirehall run` twice over Redis,
one Chromium tab on each process, two people chatting across them, a bad name refused readably."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._servers import stop_process, wait_until_serving
from tests.conftest import free_port
from tests.guide.pages import EXAMPLES, ROOT

pytestmark = [pytest.mark.redis, pytest.mark.browser]

WIREHALL = Path(sys.executable).with_name("wirehall")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
WAIT_MS = 15_000


class TutorialServer:
    """`wirehall run app:app` in a copy of guide/examples/tutorial, on its own port; stopped by PID."""

    def __init__(self, folder: Path, port: int, backplane: str, ws: str) -> None:
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / f"server-{port}.log"
        env = {**os.environ, "WIREHALL_BACKPLANE": backplane, "PYTHONUNBUFFERED": "1"}
        command = [str(WIREHALL), "run", "app:app", "--host", "127.0.0.1", "--port", str(port), "--ws", ws]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_until_serving(self.process, self.url + "/", timeout=30.0, log=self.log)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process, timeout=20.0)


@pytest.fixture
def servers(tmp_path: Path, redis_url: str, server_ws: str) -> Iterator[list[TutorialServer]]:
    folder = tmp_path / "chat"
    shutil.copytree(EXAMPLES / "tutorial", folder)
    started: list[TutorialServer] = []
    try:
        for _ in range(2):
            started.append(TutorialServer(folder, free_port(), redis_url, server_ws))
        yield started
    finally:
        for server in started:
            server.stop()


async def join(page: Any, url: str, name: str) -> None:
    await page.goto(url)
    await page.get_by_test_id("name").fill(name)
    await page.get_by_test_id("join").click()


async def test_two_tabs_on_two_processes_chat(servers: list[TutorialServer], chromium_path: str) -> None:
    from playwright.async_api import async_playwright, expect

    first, second = servers
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            ann = await (await browser.new_context()).new_page()
            bob = await (await browser.new_context()).new_page()
            errors: list[str] = []
            for page in (ann, bob):
                page.on("pageerror", lambda error: errors.append(str(error)))
            await join(ann, first.url, "ann")
            await expect(ann.get_by_test_id("status")).to_have_text("open", timeout=WAIT_MS)
            await join(bob, second.url, "bob")
            for page in (ann, bob):
                await expect(page.get_by_test_id("people")).to_have_text("ann, bob", timeout=WAIT_MS)

            await ann.get_by_test_id("text").fill("hello from the first process")
            await ann.get_by_test_id("send").click()
            for page in (ann, bob):
                await expect(page.get_by_test_id("messages")).to_have_text(
                    "ann: hello from the first process", timeout=WAIT_MS
                )
            await bob.get_by_test_id("text").fill("<b>hi</b> from the second")
            await bob.get_by_test_id("send").click()
            await expect(ann.get_by_test_id("messages").locator("li")).to_have_text(
                ["ann: hello from the first process", "bob: <b>hi</b> from the second"], timeout=WAIT_MS
            )

            nobody = await (await browser.new_context()).new_page()
            await join(nobody, second.url, "x" * 40)
            await expect(nobody.get_by_test_id("status")).to_have_text(
                "refused: pick a name of 1 to 32 characters", timeout=WAIT_MS
            )
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            await ann.screenshot(path=str(ROOT / "test-artifacts" / "guide-tutorial-chat.png"))
            assert errors == []
        finally:
            await browser.close()
