"""Credentials never reach `wirehall run`'s log, in text or JSON: query strings of HTTP requests and
of accepted and refused WebSockets, and (at debug level) the Cookie and Authorization headers."""

from __future__ import annotations

import json
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


def log_messages(log: str, log_format: str) -> list[str]:
    """The log's lines (text), or the message of each of its JSON lines (every one must parse)."""
    lines = [line for line in log.splitlines() if line and not line.startswith("serving Host")]
    if log_format == "text":
        return lines
    return [json.loads(line)["message"] for line in lines]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_secret_in_any_log_line(tmp_path: Path, log_format: str, server_ws: str) -> None:
    port = free_port()
    options = ("--redact-param", "sid", "--log-format", log_format)
    with wirehall_run(port, tmp_path / "server.log", *options, ws=server_ws) as server:
        async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as client:
            ok = await client.get(
                "/api/echo", params={"token": "SECRET-http", "sid": "SECRET-extra", "page": "2"}
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
    messages = "\n".join(log_messages(log, log_format))
    assert "/api/echo?token=REDACTED&sid=REDACTED&page=2" in messages
    assert '"WebSocket /ws/echo?token=REDACTED&user=ann" [accepted]' in messages
    assert '"WebSocket /ws/echo?access_token=REDACTED&refuse=1" 403' in messages


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_cookie_or_authorization_in_a_debug_log(
    tmp_path: Path, log_format: str, server_ws: str
) -> None:
    # at debug level the websockets library writes every handshake header through uvicorn's logger
    port = free_port()
    secrets = {
        "Cookie": "session=SECRET-cookie",
        "Authorization": "Bearer SECRET-bearer",
        "X-Api-Key": "SECRET-api-key",
    }
    options = ("--log-level", "debug", "--log-format", log_format)
    with wirehall_run(port, tmp_path / "server.log", *options, ws=server_ws) as server:
        async with httpx.AsyncClient(base_url=server.http_url, trust_env=False) as client:
            assert (await client.get("/api/echo", headers=secrets)).status_code == 200
        async with connect(f"{server.ws_url}/ws/echo?user=ann", additional_headers=secrets) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        wait_for_log(server, "x-api-key: REDACTED", 1)  # uvicorn hands the headers on in lower case
    log = server.log()
    assert "SECRET" not in log
    messages = log_messages(log, log_format)
    header_lines = {line.partition("< ")[2] for line in messages if "< " in line}
    assert {"cookie: REDACTED", "authorization: REDACTED", "x-api-key: REDACTED"} <= header_lines
