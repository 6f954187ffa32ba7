"""The guide builds strictly (a warning fails it) and its tutorial page renders in Chromium."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.guide.pages import ROOT

MKDOCS = Path(sys.executable).with_name("mkdocs")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guide built as `make docs` builds it, into a folder of the test's own."""
    if not MKDOCS.exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    target = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(target)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stderr}"
    return target


@pytest.fixture(scope="module")
def site_url(site: Path) -> Iterator[str]:
    """The built site served over HTTP on a loopback port (the search index needs fetch)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, name="guide-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_guide_builds_with_every_page(site: Path) -> None:
    for page in (
        "tutorial",
        "http",
        "websocket",
        "browser-client",
        "configuration",
        "api",
        "design/security",
    ):
        assert (site / page / "index.html").is_file(), page
    configuration = (site / "configuration" / "index.html").read_text()
    assert "<code>--log-format [text|json]</code>" in configuration  # the generated table
    assert "wirehall-cli" not in configuration
    assert 'id="wirehall.Wirehall"' in (site / "api" / "index.html").read_text()  # from docstrings


@pytest.mark.browser
async def test_the_tutorial_page_renders(site_url: str, chromium_path: str) -> None:
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(site_url + "/tutorial/")
            await expect(page).to_have_title("Tutorial - wirehall")  # the nav title, then the site's
            await expect(page.locator("h1")).to_contain_text("Tutorial: a chat room in ten minutes")
            navigation = page.locator("nav.md-nav--primary")
            await expect(navigation.get_by_role("link", name="WebSocket", exact=True)).to_be_attached()
            code = page.locator("pre code").filter(has_text="class ChatRoom(WebSocketController)")
            await expect(code).to_be_visible()
            await code.scroll_into_view_if_needed()
            await page.screenshot(path=str(ARTIFACTS / "guide-tutorial.png"))
            await page.goto(site_url + "/tutorial/")
            await page.screenshot(path=str(ARTIFACTS / "guide-tutorial-top.png"))
            assert errors == []
        finally:
            await browser.close()
