"""Credentials in query strings never reach `wirehall run`'s log: HTTP, accepted and refused WebSockets."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import free_port
from tests.hostile._server import RunningServer, wirehall_run


def wait_for_log(server: RunningServer, needle: str, count: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if log.count(needle) >= count:
            return log
        time.sleep(0.05)
    raise AssertionError(
        f"{needle!r} did not appear {count} times in the log within {timeout}s:\n{server.log()}"
    )


async def test_no_secret_in_any_log_line(tmp_path: Path) -> None:
    port = free_port()
    with wirehall_run(port, tmp_path / "server.log", "--redact-param", "session") as server:
        async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as client:
            ok = await client.get(
                "/api/echo", params={"token": "SECRET-http", "session": "SECRET-extra", "page": "2"}
            )
            assert ok.status_code == 200
            missing = await client.get("/nowhere", params={"api_key": "SECRET-404"})
            assert missing.status_code == 404
        async with connect(f"{server.ws_url}/ws/echo?token=SECRET-ws&user=ann") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        with pytest.raises(InvalidStatus):
            async with connect(f"{server.ws_url}/ws/echo?access_token=SECRET-refused&refuse=1"):
                pass
        with pytest.raises(InvalidStatus):
            async with connect(f"{server.ws_url}/ws/none?password=SECRET-unknown"):
                pass
        wait_for_log(server, "=REDACTED", 6)
    log = server.log()  # with what it wrote while stopping
    assert "SECRET" not in log
    assert "/api/echo?token=REDACTED&session=REDACTED&page=2" in log
    assert '"WebSocket /ws/echo?token=REDACTED&user=ann" [accepted]' in log
    assert '"WebSocket /ws/echo?access_token=REDACTED&refuse=1" 403' in log
