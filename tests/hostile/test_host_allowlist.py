"""DNS rebinding against `wirehall run` on 127.0.0.1: a foreign `Host` gets no page and no WebSocket."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.hostile._server import RunningServer, exchange, wirehall_run


@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory: pytest.TempPathFactory, server_ws: str) -> Iterator[RunningServer]:
    with wirehall_run(free_port(), tmp_path_factory.mktemp("hosts") / "server.log", ws=server_ws) as server:
        yield server


def handshake(path: str, host: str, origin: str) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ).encode()
        + b"Sec-WebSocket-Key: "
        + key
        + b"\r\n\r\n"
    )


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    return int(answer[9:12])


async def test_a_spoofed_host_and_origin_get_no_websocket(loopback_server: RunningServer) -> None:
    answer = await exchange(loopback_server.port, handshake("/ws/echo", "evil.com", "http://evil.com"))
    assert status(answer) in (400, 403)
    with_port = await exchange(
        loopback_server.port, handshake("/ws/echo", "evil.com:8000", "http://evil.com:8000")
    )
    assert status(with_port) in (400, 403)


async def test_a_foreign_origin_on_a_loopback_host_gets_no_websocket(loopback_server: RunningServer) -> None:
    host = f"127.0.0.1:{loopback_server.port}"
    answer = await exchange(loopback_server.port, handshake("/ws/echo", host, "http://evil.com"))
    assert status(answer) == 403


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]"])
async def test_loopback_names_are_served(loopback_server: RunningServer, name: str) -> None:
    host = f"{name}:{loopback_server.port}"
    answer = await exchange(loopback_server.port, handshake("/ws/echo", host, f"http://{host}"))
    assert status(answer) == 101
    page = await exchange(loopback_server.port, f"GET /api/echo HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert status(page) == 200


async def test_a_foreign_host_gets_400_over_http(loopback_server: RunningServer) -> None:
    answer = await exchange(loopback_server.port, b"GET /api/echo HTTP/1.1\r\nHost: evil.com\r\n\r\n")
    assert status(answer) == 400
    assert b'{"error":"invalid Host header"}' in answer


async def test_allowed_host_option_replaces_the_loopback_names(tmp_path: Path) -> None:
    port = free_port()
    with wirehall_run(
        port, tmp_path / "server.log", "--allowed-host", "127.0.0.1", "--allowed-host", "chat.example"
    ):
        served = await exchange(port, b"GET /api/echo HTTP/1.1\r\nHost: chat.example\r\n\r\n")
        assert status(served) == 200
        refused = await exchange(port, b"GET /api/echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status(refused) == 400
