"""A peer that stops reading is let go: closed with 1013, its TCP connection aborted, its presence gone.

`wirehall run tests.websocket._server_app:app` with the default WebSocket implementation
(websockets-sansio) and with `--ws websockets`, keepalive pings off, a 2 s drain deadline and
a 1 s close timeout. A raw client joins a room with a small receive buffer and stops reading
while another member keeps receiving broadcasts. The server must reset the stalled connection
within drain deadline + close timeout (+ slack), forget its presence, and keep the room going.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests._servers import stop_process, wait_until_serving
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads TCP_INFO (Linux)")

ROOT = Path(__file__).resolve().parents[2]
WIREHALL = Path(sys.executable).with_name("wirehall")
DRAIN_TIMEOUT = 2.0
CLOSE_TIMEOUT = 1.0
SLACK = 3.0  # two shared cores: scheduling, and the broadcasts that find the deadline passed
TCP_CLOSE = 7  # tcpi_state once the connection was reset
# More than the kernel's send buffer (tcp_wmem: up to 4 MiB) and uvicorn's write buffer
# take for a peer that reads nothing: what is left waits in the connection's outbox.
FILL_COUNT, FILL_SIZE = 96, 65536

logger = logging.getLogger(__name__)


class Server:
    """`wirehall run` on a free loopback port, stopped by its PID."""

    def __init__(self, ws: str, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "WH_TEST_MAX_QUEUE": "100000",  # the drain deadline decides here, not the queue length
            "WH_TEST_MAX_PENDING_BYTES": str(64 * 1024 * 1024),  # nor the byte budget
            "WH_TEST_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
            "WH_TEST_CLOSE_TIMEOUT": str(CLOSE_TIMEOUT),
        }
        env.pop("WIREHALL_BACKPLANE", None)
        command = [str(WIREHALL), "run", "tests.websocket._server_app:app", "--ws", ws]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--ws-ping-interval", "0"]
        command += ["--log-level", "warning", "--no-access-log"]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> Any:
        with httpx.Client(trust_env=False, timeout=5.0) as client:
            response = client.get(f"http://127.0.0.1:{self.port}{path}")
        response.raise_for_status()
        return response.json()


@pytest.fixture(params=["websockets-sansio", "websockets", "wirehall"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    server = Server(request.param, tmp_path / "server.log")
    try:
        wait_until_serving(server.process, f"http://127.0.0.1:{server.port}/healthz", log=lambda: server.log)
        yield server
    finally:
        stop_process(server.process, signal.SIGINT, 10)
    assert "Traceback" not in server.log, server.log
    assert "never retrieved" not in server.log, server.log


class StalledClient:
    """Joins over a plain socket with a small receive buffer, reads its welcome, then nothing."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        data = b""
        while b'"joined"' not in data:  # the 101 head, then the {"type": "joined"} frame
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"the server closed during the handshake: {data!r}")
            data += chunk
        assert data.startswith(b"HTTP/1.1 101"), data

    def tcp_state(self) -> int:
        """The kernel's state of this end of the connection (tcpi_state of TCP_INFO)."""
        return self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]

    def read_to_the_end(self) -> str:
        """Read what is left: 'reset' or 'eof' (raises TimeoutError if the connection stays)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return "reset"
        return "eof"


async def join(server: Server, room: str, user: str) -> ClientConnection:
    ws = await connect(server.url(f"/hurried/{room}?user={user}"), open_timeout=10, max_size=None)
    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "joined"
    return ws


async def broadcast(control: ClientConnection, member: ClientConnection, count: int, size: int) -> float:
    """Have the server broadcast `count` messages to the room; seconds until `member` had them all."""
    started = time.monotonic()
    await control.send(json.dumps({"type": "burst", "room": "lobby", "count": count, "size": size}))
    async with asyncio.timeout(30):
        seqs = [json.loads(await member.recv())["seq"] for _ in range(count)]
        elapsed = time.monotonic() - started
        assert json.loads(await control.recv()) == {"type": "burst-done"}
    assert seqs == list(range(count))
    return elapsed


async def present(server: Server, room: str) -> list[str]:
    return sorted((await asyncio.to_thread(server.get, f"/presence/{room}")).values())


async def test_a_peer_that_stops_reading_is_reset_and_leaves_while_the_room_carries_on(
    server: Server,
) -> None:
    stalled = await asyncio.to_thread(StalledClient, server.port, "/hurried/lobby?user=stalled")
    try:
        async with await join(server, "lobby", "ann") as member, await join(server, "control", "") as control:
            assert await present(server, "lobby") == ["ann", "stalled"]
            await broadcast(control, member, FILL_COUNT, FILL_SIZE)  # the stalled peer is backed up now
            filled = time.monotonic()
            deadline = filled + DRAIN_TIMEOUT + CLOSE_TIMEOUT + SLACK
            delays: list[float] = []
            while stalled.tcp_state() != TCP_CLOSE and time.monotonic() < deadline:
                delays.append(await broadcast(control, member, 5, 200))
                await asyncio.sleep(0.05)  # pace: about 15 broadcasts a second, not a synchronisation
            gone_after = time.monotonic() - filled
            logger.info(
                "stalled peer reset %.2fs after the fill; broadcast delays up to %.3fs",
                gone_after,
                max(delays),
            )
            assert stalled.tcp_state() == TCP_CLOSE, f"still connected {gone_after:.1f}s after the fill"
            assert await asyncio.to_thread(stalled.read_to_the_end) == "reset"
            assert await present(server, "lobby") == ["ann"]
            assert (await asyncio.to_thread(server.get, "/healthz"))["connections"] == 2
            delays.append(await broadcast(control, member, 5, 200))  # the room still works
            assert max(delays) < 1.0, delays
    finally:
        with contextlib.suppress(OSError):
            stalled.sock.close()
    log = server.log
    assert "closing slow consumer" in log, log
    assert "did not drain for 2s" in log, log
    assert "did not take its close frame within 1.0s" in log, log


def test_tcp_info_state_of_a_reset_connection_is_close() -> None:
    """The check above reads tcpi_state; a connection reset by its peer must read 7 here."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()
        deadline = time.monotonic() + 5
        state = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        while state != TCP_CLOSE and time.monotonic() < deadline:
            time.sleep(0.01)
            state = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
        client.close()
    assert state == TCP_CLOSE
